// Batch mode: one command applied to many files, with one module load and one login, on
// worker threads.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"

namespace p11smime::cli {

// The result of one file of a batch. Workers fill it instead of printing, so that the
// reports of files processed in parallel never interleave.
struct FileOutcome {
    int status = 0;      // the exit status this file alone would give
    std::string report;  // text for standard output
    std::string notices; // text for standard error: warnings, and errors not thrown
};

// One file of a batch: its position in the command line, its path and its output path.
struct BatchFile {
    size_t index = 0;
    std::string input;
    std::optional<std::string> output; // DIR/NAME with --out-dir, else none
};

// Returns the error lines for an Error raised while processing file.
std::string error_notice(const std::string &file, const Error &error);

// Returns the files with their outputs in out_dir, each named like its input. Throws Error
// when out_dir is not a folder, when two inputs have the same name, or when an output would
// replace its own input.
std::vector<BatchFile> plan_batch(const std::vector<std::string> &inputs,
                                  const std::optional<std::string> &out_dir);

// The maximum of --jobs. libp11 0.4.12 keeps at most 16 sessions per slot, and more threads
// than that only wait for a free session.
constexpr unsigned max_jobs = 16;

// Returns the number of worker threads: requested (--jobs), or else the number of cores up
// to max_jobs.
unsigned worker_count(std::optional<unsigned> requested);

// Runs process on every file with jobs worker threads. An Error thrown for one file is
// reported with the file's name and gives that file status 2; the other files go on. Prints
// each outcome in command-line order as soon as the files before it are done, then a summary
// line on standard error when any file failed. Returns the worst status of all files.
int run_batch(const std::vector<BatchFile> &files, unsigned jobs,
              const std::function<FileOutcome(const BatchFile &)> &process);

} // namespace p11smime::cli
