#include "common/tempfile.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/error.h"

namespace p11smime {

TempFile::TempFile(const std::string &folder) {
    fd_ = open(folder.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd_ >= 0)
        return;

    std::string pattern = folder + "/.p11smime-XXXXXX";
    std::vector<char> name(pattern.begin(), pattern.end());
    name.push_back('\0');
    fd_ = mkostemp(name.data(), O_CLOEXEC);
    if (fd_ < 0)
        throw Error("cannot create a temporary file in '" + folder + "': " + std::strerror(errno),
                    "check that the folder exists, is writable and has free space");
    unlink(name.data());
}

TempFile::~TempFile() {
    if (fd_ >= 0)
        close(fd_);
}

uint64_t TempFile::size() const {
    struct stat status {};
    if (fstat(fd_, &status) != 0)
        throw Error(std::string("cannot read the size of a temporary file: ") +
                    std::strerror(errno));
    return static_cast<uint64_t>(status.st_size);
}

std::string temporary_folder() {
    const char *folder = std::getenv("TMPDIR");
    return folder && *folder ? folder : "/tmp";
}

std::string folder_of(const std::string &path) {
    size_t slash = path.find_last_of('/');
    if (slash == std::string::npos)
        return ".";
    return slash == 0 ? "/" : path.substr(0, slash);
}

} // namespace p11smime
