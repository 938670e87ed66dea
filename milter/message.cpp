#include "milter/message.h"

#include <strings.h>

#include <algorithm>

#include "cms/mime.h"
#include "common/error.h"

namespace p11smime::milter {
namespace {

bool same_name(const std::string &a, const std::string &b) {
    return a.size() == b.size() && strcasecmp(a.c_str(), b.c_str()) == 0;
}

std::string crlf_value(const std::string &value) {
    return to_crlf(normalise_value(value));
}

// Returns the value of a raw "Name: value" field through its line ending, as libmilter would
// pass it: without the colon, the whitespace after it and the final line ending.
std::string raw_value(const RawHeader &header) {
    size_t colon = header.raw.find(':');
    std::string value = colon == std::string::npos ? "" : header.raw.substr(colon + 1);
    size_t start = value.find_first_not_of(" \t");
    value.erase(0, start == std::string::npos ? value.size() : start);
    while (!value.empty() && (value.back() == '\n' || value.back() == '\r'))
        value.pop_back();
    return normalise_value(value);
}

} // namespace

std::string normalise_value(const std::string &value) {
    std::string result;
    result.reserve(value.size());
    for (size_t i = 0; i < value.size(); ++i) {
        if (value[i] == '\r') {
            result += '\n';
            if (i + 1 < value.size() && value[i + 1] == '\n')
                ++i;
            continue;
        }
        result += value[i];
    }
    return result;
}

std::string assemble_message(const std::vector<HeaderField> &headers, const std::string &body) {
    std::string message;
    for (const auto &field : headers)
        message += field.name + ": " + crlf_value(field.value) + "\r\n";
    return message + "\r\n" + body;
}

std::vector<HeaderField> parse_header_fields(const std::string &message, std::string &body) {
    SplitMessage split = split_message(message);
    std::vector<RawHeader> raw = split.routing_headers;
    raw.insert(raw.end(), split.content_headers.begin(), split.content_headers.end());

    // split_message groups the fields; put them back in the order of the message.
    std::vector<std::pair<size_t, HeaderField>> ordered;
    for (const auto &header : raw) {
        size_t position = message.find(header.raw);
        while (position != std::string::npos &&
               std::any_of(ordered.begin(), ordered.end(),
                           [position](const auto &entry) { return entry.first == position; }))
            position = message.find(header.raw, position + 1);
        ordered.emplace_back(position, HeaderField{header.name, raw_value(header)});
    }
    std::stable_sort(ordered.begin(), ordered.end(),
                     [](const auto &a, const auto &b) { return a.first < b.first; });

    std::vector<HeaderField> fields;
    for (auto &entry : ordered)
        fields.push_back(std::move(entry.second));
    body = to_crlf(split.body);
    return fields;
}

MessageEdits compute_edits(const std::vector<HeaderField> &original,
                           const std::vector<HeaderField> &desired,
                           const std::vector<HeaderField> &trace) {
    std::vector<bool> desired_used(desired.size(), false);
    std::vector<HeaderEdit> removals;
    std::vector<std::pair<std::string, int>> seen; // occurrences of each name so far

    for (const auto &field : original) {
        auto counter = std::find_if(seen.begin(), seen.end(), [&](const auto &entry) {
            return same_name(entry.first, field.name);
        });
        if (counter == seen.end())
            counter = seen.insert(seen.end(), {field.name, 0});
        int index = ++counter->second;

        std::string value = normalise_value(field.value);
        bool kept = false;
        for (size_t i = 0; i < desired.size() && !kept; ++i) {
            if (!desired_used[i] && same_name(desired[i].name, field.name) &&
                normalise_value(desired[i].value) == value)
                desired_used[i] = kept = true;
        }
        if (!kept)
            removals.push_back({HeaderEdit::Kind::remove, field.name, index, {}});
    }

    MessageEdits edits;
    edits.headers.assign(removals.rbegin(), removals.rend());
    for (auto it = trace.rbegin(); it != trace.rend(); ++it)
        edits.headers.push_back(
            {HeaderEdit::Kind::insert_at_top, it->name, 0, normalise_value(it->value)});
    for (size_t i = 0; i < desired.size(); ++i)
        if (!desired_used[i])
            edits.headers.push_back(
                {HeaderEdit::Kind::append, desired[i].name, 0, normalise_value(desired[i].value)});
    return edits;
}

} // namespace p11smime::milter
