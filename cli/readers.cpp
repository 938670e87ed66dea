#include "cli/readers.h"

#include <iostream>
#include <optional>

#include <nlohmann/json.hpp>

#include "cli/token_commands.h"
#include "pcsc/readers.h"

namespace p11smime::cli {
namespace {

constexpr int exit_success = 0;
constexpr size_t slot_description_size = 64; // CK_SLOT_INFO.slotDescription

std::optional<ModuleInfo> load_slots(const CommonOptions &common) {
    std::string path = choose_module(nullptr, token_options(common));
    try {
        return list_module_slots(path);
    } catch (const Error &error) {
        warn(std::string(error.what()) + "; the readers are listed without their slots");
        return std::nullopt;
    }
}

std::string slot_text(const SlotInfo &slot) {
    std::string text = std::to_string(slot.slot_id) + ", ";
    if (!slot.token_present)
        return text + "no token (empty, or a card that the module does not recognise)";
    return text + "token '" + slot.label + "' " + slot.token_uri;
}

void print_text(const std::vector<ReaderStatus> &readers,
                const std::optional<ModuleInfo> &module) {
    for (const auto &reader : readers) {
        std::cout << reader.name << "\n";
        std::cout << "  card:   " << (reader.card_present ? "present" : "absent");
        if (reader.card_present)
            std::cout << ", ATR " << atr_text(reader.atr);
        if (reader.card_mute)
            std::cout << ", mute (the card sends no ATR)";
        std::cout << "\n";
        if (!module)
            continue;
        std::vector<const SlotInfo *> slots = slots_for_reader(*module, reader.name);
        if (slots.empty())
            std::cout << "  slot:   none in " << module->path << "\n";
        for (const SlotInfo *slot : slots)
            std::cout << "  slot:   " << slot_text(*slot) << "\n";
    }
}

void print_json(const std::vector<ReaderStatus> &readers,
                const std::optional<ModuleInfo> &module) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto &reader : readers) {
        nlohmann::json entry{{"name", reader.name},
                             {"card_present", reader.card_present},
                             {"card_mute", reader.card_mute},
                             {"atr", atr_text(reader.atr)}};
        nlohmann::json slots = nlohmann::json::array();
        for (const SlotInfo *slot : module ? slots_for_reader(*module, reader.name)
                                           : std::vector<const SlotInfo *>())
            slots.push_back({{"slot_id", slot->slot_id},
                             {"token_present", slot->token_present},
                             {"token_label", slot->label},
                             {"token_uri", slot->token_uri}});
        entry["slots"] = slots;
        list.push_back(entry);
    }
    nlohmann::json document{{"readers", list}};
    document["module"] = module ? nlohmann::json(module->path) : nlohmann::json(nullptr);
    std::cout << document.dump(2) << "\n";
}

std::vector<ReaderStatus> wait_for_reader_card(const ReadersCommandOptions &options) {
    std::optional<std::vector<ReaderStatus>> readers =
        wait_for_card(options.reader, std::chrono::seconds(options.timeout));
    if (!readers)
        throw Error("timed out after " + std::to_string(options.timeout) +
                        " s waiting for a card" +
                        (options.reader ? " in reader '" + *options.reader + "'" : ""),
                    "insert the card, or wait longer with --timeout SECONDS");
    return *readers;
}

} // namespace

std::vector<const SlotInfo *> slots_for_reader(const ModuleInfo &module,
                                               const std::string &reader) {
    std::vector<const SlotInfo *> result;
    for (const auto &slot : module.slots) {
        const std::string &description = slot.description;
        bool cut = description.size() >= slot_description_size - 1 &&
                   reader.compare(0, description.size(), description) == 0;
        if (!description.empty() && (description == reader || cut))
            result.push_back(&slot);
    }
    return result;
}

CLI::App *add_readers(CLI::App &app, ReadersCommandOptions &options) {
    CLI::App *readers = app.add_subcommand(
        "readers", "List PC/SC smart card readers, their cards and the PKCS#11 slots that "
                   "serve them");
    readers->add_flag("--wait", options.wait,
                      "wait until a card is present (at once if one already is)");
    readers->add_option("--timeout", options.timeout,
                        "with --wait, give up after this many seconds (default: 0, no limit)");
    readers->add_option("--reader", options.reader,
                        "with --wait, the name of the reader to wait for (default: any)");
    readers->add_flag("--json", options.json, "print JSON instead of text");
    readers->add_option("--module", options.common.module,
                        "PKCS#11 module whose slots are shown (default: $P11SMIME_MODULE, "
                        "else p11-kit's proxy with every registered module)");
    return readers;
}

int run_readers(const ReadersCommandOptions &options) {
    std::vector<ReaderStatus> readers =
        options.wait ? wait_for_reader_card(options) : list_readers();
    if (readers.empty() && !options.json) {
        std::cerr << "p11smime: no PC/SC readers found; plug one in, or check that its "
                     "driver (such as libccid) is installed\n";
        return exit_success;
    }
    std::optional<ModuleInfo> module = load_slots(options.common);
    if (options.json)
        print_json(readers, module);
    else
        print_text(readers, module);
    return exit_success;
}

} // namespace p11smime::cli
