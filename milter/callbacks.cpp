// The libmilter callbacks: they collect one message per MAIL FROM and hand it to the filter at
// end of message. libmilter calls them from its worker threads, one callback at a time per
// MTA connection.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <cstring>

#include <libmilter/mfapi.h>

#include "milter/daemon.h"

namespace p11smime::milter {
namespace {

// libmilter sends a replacement body in pieces of at most this many bytes.
constexpr size_t body_chunk_size = 65535;

Daemon *daemon_instance = nullptr;

struct Connection {
    bool trusted_network = false;
    bool in_message = false;
    Envelope envelope;
    std::vector<HeaderField> headers;
    std::string body;
};

Connection *connection_of(SMFICTX *context) {
    return static_cast<Connection *>(smfi_getpriv(context));
}

// A libmilter argument as a mutable C string, since its API predates const.
char *c_string(const std::string &text) {
    return const_cast<char *>(text.c_str());
}

bool is_trusted_address(const sockaddr *address, const Config &config) {
    if (!address) // the MTA's own submissions, e.g. Postfix's sendmail command
        return true;
    const unsigned char *bytes = nullptr;
    if (address->sa_family == AF_INET)
        bytes = reinterpret_cast<const unsigned char *>(
            &reinterpret_cast<const sockaddr_in *>(address)->sin_addr);
    else if (address->sa_family == AF_INET6)
        bytes = reinterpret_cast<const unsigned char *>(
            &reinterpret_cast<const sockaddr_in6 *>(address)->sin6_addr);
    else
        return address->sa_family == AF_UNIX;
    for (const auto &network : config.trusted_networks)
        if (network.contains(address->sa_family, bytes))
            return true;
    return false;
}

std::string strip_angle_brackets(const char *address) {
    std::string text = address ? address : "";
    if (text.size() >= 2 && text.front() == '<' && text.back() == '>')
        text = text.substr(1, text.size() - 2);
    return text;
}

void finish_message(Connection &connection) {
    if (!connection.in_message)
        return;
    connection.in_message = false;
    daemon_instance->end_message();
}

sfsistat on_connect(SMFICTX *context, char *, _SOCK_ADDR *address) {
    auto *connection = new Connection;
    connection->trusted_network = is_trusted_address(address, daemon_instance->runtime()->config);
    if (smfi_setpriv(context, connection) != MI_SUCCESS) {
        delete connection;
        return SMFIS_TEMPFAIL;
    }
    return SMFIS_CONTINUE;
}

sfsistat on_envfrom(SMFICTX *context, char **arguments) {
    Connection *connection = connection_of(context);
    if (!connection)
        return SMFIS_TEMPFAIL;
    finish_message(*connection);
    if (!daemon_instance->begin_message()) {
        smfi_setreply(context, c_string("421"), c_string("4.3.2"),
                      c_string("p11smime-milter is shutting down, try again later"));
        return SMFIS_TEMPFAIL;
    }
    connection->in_message = true;
    connection->envelope = Envelope();
    connection->headers.clear();
    connection->body.clear();

    connection->envelope.sender = strip_angle_brackets(arguments ? arguments[0] : nullptr);
    const char *authenticated = smfi_getsymval(context, c_string("{auth_authen}"));
    connection->envelope.trusted_client =
        connection->trusted_network || (authenticated && *authenticated);
    return SMFIS_CONTINUE;
}

sfsistat on_envrcpt(SMFICTX *context, char **arguments) {
    Connection *connection = connection_of(context);
    if (!connection || !arguments || !arguments[0])
        return SMFIS_TEMPFAIL;
    connection->envelope.recipients.push_back(strip_angle_brackets(arguments[0]));
    return SMFIS_CONTINUE;
}

sfsistat on_header(SMFICTX *context, char *name, char *value) {
    Connection *connection = connection_of(context);
    if (!connection)
        return SMFIS_TEMPFAIL;
    connection->headers.push_back({name ? name : "", value ? value : ""});
    return SMFIS_CONTINUE;
}

sfsistat on_body(SMFICTX *context, unsigned char *chunk, size_t length) {
    Connection *connection = connection_of(context);
    if (!connection)
        return SMFIS_TEMPFAIL;
    connection->body.append(reinterpret_cast<const char *>(chunk), length);
    return SMFIS_CONTINUE;
}

bool apply_header_edit(SMFICTX *context, const HeaderEdit &edit) {
    switch (edit.kind) {
    case HeaderEdit::Kind::remove:
        return smfi_chgheader(context, c_string(edit.name), edit.index, nullptr) == MI_SUCCESS;
    case HeaderEdit::Kind::insert_at_top:
        return smfi_insheader(context, 0, c_string(edit.name), c_string(edit.value)) == MI_SUCCESS;
    default:
        return smfi_addheader(context, c_string(edit.name), c_string(edit.value)) == MI_SUCCESS;
    }
}

bool apply_edits(SMFICTX *context, const MessageEdits &edits) {
    for (const auto &edit : edits.headers)
        if (!apply_header_edit(context, edit))
            return false;
    if (!edits.body)
        return true;
    const std::string &body = *edits.body;
    for (size_t offset = 0; offset < body.size(); offset += body_chunk_size) {
        size_t length = std::min(body_chunk_size, body.size() - offset);
        auto *bytes = reinterpret_cast<unsigned char *>(const_cast<char *>(body.data() + offset));
        if (smfi_replacebody(context, bytes, static_cast<int>(length)) != MI_SUCCESS)
            return false;
    }
    return true;
}

sfsistat reply_for(SMFICTX *context, const FilterResult &result) {
    if (result.verdict == Verdict::accept)
        return SMFIS_CONTINUE;
    smfi_setreply(context, c_string(result.reply_code), c_string(result.extended_code),
                  c_string(result.reply_text));
    return result.verdict == Verdict::tempfail ? SMFIS_TEMPFAIL : SMFIS_REJECT;
}

void log_result(const std::string &queue_id, const FilterResult &result, long milliseconds) {
    std::string line = "queue_id=" + log_quote(queue_id) + " action=" + result.action +
                       " result=" + result.result + " ms=" + std::to_string(milliseconds);
    if (!result.detail.empty())
        line += " detail=" + log_quote(result.detail);
    if (result.verdict == Verdict::accept)
        daemon_instance->logger().info(line);
    else
        daemon_instance->logger().warning(line);
}

FilterResult filter_safely(Connection &connection) {
    std::shared_ptr<const Runtime> runtime = daemon_instance->runtime();
    try {
        return filter_message(*runtime, daemon_instance->keys(), connection.envelope,
                              connection.headers, connection.body);
    } catch (const std::exception &error) {
        FilterResult result;
        result.verdict = Verdict::tempfail;
        result.reply_code = "451";
        result.extended_code = "4.3.0";
        result.reply_text = "S/MIME processing failed, try again later";
        result.action = "none";
        result.result = "tempfail";
        result.detail = error.what();
        return result;
    }
}

sfsistat on_eom(SMFICTX *context) {
    Connection *connection = connection_of(context);
    if (!connection)
        return SMFIS_TEMPFAIL;
    auto started = std::chrono::steady_clock::now();
    const char *queue_id = smfi_getsymval(context, c_string("i"));
    connection->envelope.queue_id = queue_id ? queue_id : "";

    FilterResult result = filter_safely(*connection);
    if (result.verdict == Verdict::accept && !apply_edits(context, result.edits)) {
        result.verdict = Verdict::tempfail;
        result.reply_code = "451";
        result.extended_code = "4.3.0";
        result.reply_text = "the MTA refused the milter's changes, try again later";
        result.result = "tempfail";
        result.detail = "a libmilter edit call failed";
    }
    auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - started);
    log_result(connection->envelope.queue_id, result, static_cast<long>(elapsed.count()));
    sfsistat status = reply_for(context, result);

    connection->body.clear();
    connection->body.shrink_to_fit();
    finish_message(*connection);
    return status;
}

sfsistat on_abort(SMFICTX *context) {
    if (Connection *connection = connection_of(context))
        finish_message(*connection);
    return SMFIS_CONTINUE;
}

sfsistat on_close(SMFICTX *context) {
    Connection *connection = connection_of(context);
    if (connection) {
        finish_message(*connection);
        delete connection;
        smfi_setpriv(context, nullptr);
    }
    return SMFIS_CONTINUE;
}

} // namespace

void register_milter(Daemon &daemon, const std::string &socket) {
    // libmilter keeps the name pointer after smfi_register returns, so it must outlive it.
    static char milter_name[] = "p11smime-milter";
    daemon_instance = &daemon;
    smfiDesc description{};
    description.xxfi_name = milter_name;
    description.xxfi_version = SMFI_VERSION;
    description.xxfi_flags = SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_CHGBODY;
    description.xxfi_connect = on_connect;
    description.xxfi_envfrom = on_envfrom;
    description.xxfi_envrcpt = on_envrcpt;
    description.xxfi_header = on_header;
    description.xxfi_body = on_body;
    description.xxfi_eom = on_eom;
    description.xxfi_abort = on_abort;
    description.xxfi_close = on_close;

    if (smfi_setconn(c_string(socket)) != MI_SUCCESS)
        throw Error("libmilter rejected the socket '" + socket + "'",
                    "write socket = unix:/PATH or socket = inet:PORT@HOST");
    if (smfi_register(description) != MI_SUCCESS)
        throw Error("smfi_register failed: libmilter rejected the milter description");
    if (smfi_opensocket(true) != MI_SUCCESS)
        throw Error("cannot listen on '" + socket + "'",
                    "check that the port is free or the folder of the unix socket exists "
                    "and is writable");
}

bool run_milter() {
    return smfi_main() == MI_SUCCESS;
}

void stop_milter() {
    smfi_stop();
}

} // namespace p11smime::milter
