#include "cli/batch.h"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <iostream>
#include <map>
#include <mutex>
#include <thread>

#include "common/error.h"

namespace p11smime::cli {
namespace {

std::string base_name(const std::string &path) {
    size_t slash = path.find_last_of('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

bool is_folder(const std::string &path) {
    struct stat status {};
    return stat(path.c_str(), &status) == 0 && S_ISDIR(status.st_mode);
}

bool same_file(const std::string &a, const std::string &b) {
    struct stat first {};
    struct stat second {};
    return stat(a.c_str(), &first) == 0 && stat(b.c_str(), &second) == 0 &&
           first.st_dev == second.st_dev && first.st_ino == second.st_ino;
}

FileOutcome process_one(const BatchFile &file,
                        const std::function<FileOutcome(const BatchFile &)> &process) {
    try {
        return process(file);
    } catch (const Error &error) {
        return {2, {}, error_notice(file.input, error)};
    } catch (const std::exception &error) {
        return {2, {}, "p11smime: error: " + file.input + ": " + error.what() + "\n"};
    }
}

// Prints outcomes in command-line order: an outcome waits until every file before it is
// done, so the output of a batch does not depend on --jobs.
class OrderedPrinter {
  public:
    explicit OrderedPrinter(size_t count) : outcomes_(count), done_(count, false) {}

    void finish(size_t index, FileOutcome outcome) {
        std::lock_guard<std::mutex> lock(mutex_);
        outcomes_[index] = std::move(outcome);
        done_[index] = true;
        for (; next_ < done_.size() && done_[next_]; ++next_) {
            print(outcomes_[next_]);
            outcomes_[next_] = {};
        }
    }

    int worst_status() const { return worst_; }
    size_t failures() const { return failures_; }

  private:
    void print(const FileOutcome &outcome) {
        std::cout << outcome.report << std::flush;
        std::cerr << outcome.notices << std::flush;
        worst_ = std::max(worst_, outcome.status);
        failures_ += outcome.status != 0;
    }

    std::mutex mutex_;
    std::vector<FileOutcome> outcomes_;
    std::vector<bool> done_;
    size_t next_ = 0;
    int worst_ = 0;
    size_t failures_ = 0;
};

} // namespace

std::string error_notice(const std::string &file, const Error &error) {
    std::string text = "p11smime: error: " + file + ": " + error.what() + "\n";
    if (!error.hint().empty())
        text += "p11smime: hint: " + error.hint() + "\n";
    return text;
}

std::vector<BatchFile> plan_batch(const std::vector<std::string> &inputs,
                                  const std::optional<std::string> &out_dir) {
    if (out_dir && !is_folder(*out_dir))
        throw Error("output folder '" + *out_dir + "' does not exist or is not a folder",
                    "create it first, or pass another folder to --out-dir");

    std::vector<BatchFile> files;
    std::map<std::string, std::string> inputs_by_name;
    for (const auto &input : inputs) {
        std::string name = base_name(input);
        if (input == "-" || name.empty())
            throw Error("'" + input + "' is not a file name that a batch can process",
                        "name each input file; standard input works only with --in");
        BatchFile file{files.size(), input, std::nullopt};
        if (out_dir) {
            auto [previous, added] = inputs_by_name.emplace(name, input);
            if (!added)
                throw Error("inputs '" + previous->second + "' and '" + input +
                                "' would both be written to '" + *out_dir + "/" + name + "'",
                            "rename one of them, or process them in separate runs");
            file.output = *out_dir + "/" + name;
            if (same_file(input, *file.output))
                throw Error("the output of '" + input + "' would replace the input",
                            "pass a different folder to --out-dir");
        }
        files.push_back(std::move(file));
    }
    return files;
}

unsigned worker_count(std::optional<unsigned> requested) {
    if (requested)
        return *requested;
    return std::clamp(std::thread::hardware_concurrency(), 1u, max_jobs);
}

int run_batch(const std::vector<BatchFile> &files, unsigned jobs,
              const std::function<FileOutcome(const BatchFile &)> &process) {
    OrderedPrinter printer(files.size());
    std::atomic<size_t> next{0};
    auto work = [&] {
        for (size_t index = next++; index < files.size(); index = next++)
            printer.finish(index, process_one(files[index], process));
    };

    size_t thread_count = std::min<size_t>(std::max(jobs, 1u), files.size());
    std::vector<std::thread> threads;
    for (size_t i = 1; i < thread_count; ++i)
        threads.emplace_back(work);
    work();
    for (auto &thread : threads)
        thread.join();

    if (printer.failures() > 0 && files.size() > 1)
        std::cerr << "p11smime: error: " << printer.failures() << " of " << files.size()
                  << " files failed\n";
    return printer.worst_status();
}

} // namespace p11smime::cli
