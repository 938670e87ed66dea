#include <doctest/doctest.h>

#include <fstream>
#include <iterator>

#include "common/error.h"
#include "token/uri.h"

using p11smime::Pkcs11Uri;

TEST_CASE("uri parses token and object attributes") {
    Pkcs11Uri uri = Pkcs11Uri::parse(
        "pkcs11:token=My%20Card;manufacturer=Acme;serial=0042;model=PIV;object=sign%20key;"
        "id=%01%ff;type=private");
    CHECK(uri.token == "My Card");
    CHECK(uri.manufacturer == "Acme");
    CHECK(uri.serial == "0042");
    CHECK(uri.model == "PIV");
    CHECK(uri.object == "sign key");
    REQUIRE(uri.id.has_value());
    CHECK(*uri.id == std::vector<unsigned char>{0x01, 0xff});
    CHECK(uri.type == "private");
}

TEST_CASE("uri parses slot, module and PIN attributes") {
    Pkcs11Uri uri = Pkcs11Uri::parse(
        "pkcs11:slot-id=3?module-name=softhsm2&module-path=/usr/lib/x.so"
        "&pin-source=file:/run/pin&pin-value=1234");
    CHECK(uri.slot_id == 3ul);
    CHECK(uri.module_name == "softhsm2");
    CHECK(uri.module_path == "/usr/lib/x.so");
    CHECK(uri.pin_source == "file:/run/pin");
    CHECK(uri.pin_value == "1234");
}

TEST_CASE("uri leaves absent attributes empty") {
    Pkcs11Uri uri = Pkcs11Uri::parse("pkcs11:object=k");
    CHECK_FALSE(uri.token.has_value());
    CHECK_FALSE(uri.id.has_value());
    CHECK_FALSE(uri.type.has_value());
    CHECK_FALSE(uri.slot_id.has_value());
    CHECK_FALSE(uri.pin_value.has_value());
}

TEST_CASE("uri round trip keeps every attribute") {
    Pkcs11Uri uri;
    uri.token = "p11smime test";
    uri.serial = "1a2b";
    uri.object = "key;1";
    uri.id = std::vector<unsigned char>{0x10, 0x00};
    uri.type = "cert";
    uri.module_path = "/opt/module.so";
    uri.pin_source = "file:/tmp/pin";

    std::string text = uri.to_string();
    CHECK(text.rfind("pkcs11:", 0) == 0);
    CHECK(text.find("key;1") == std::string::npos); // ';' inside a value is percent-encoded

    Pkcs11Uri again = Pkcs11Uri::parse(text);
    CHECK(again.token == uri.token);
    CHECK(again.serial == uri.serial);
    CHECK(again.object == uri.object);
    CHECK(again.id == uri.id);
    CHECK(again.type == uri.type);
    CHECK(again.module_path == uri.module_path);
    CHECK(again.pin_source == uri.pin_source);
}

TEST_CASE("uri rejects malformed text") {
    CHECK_THROWS_AS(Pkcs11Uri::parse("pkcs12:object=k"), p11smime::Error);
    CHECK_THROWS_AS(Pkcs11Uri::parse("pkcs11:id=%zz"), p11smime::Error);
    CHECK_THROWS_AS(Pkcs11Uri::parse("pkcs11:type=nonsense"), p11smime::Error);
}

TEST_CASE("uri detection tells URIs from file names") {
    CHECK(p11smime::is_pkcs11_uri("pkcs11:object=k"));
    CHECK_FALSE(p11smime::is_pkcs11_uri("cert.pem"));
    CHECK_FALSE(p11smime::is_pkcs11_uri("./pkcs11:x"));
}

TEST_CASE("uri text never carries pin-value") {
    Pkcs11Uri uri = Pkcs11Uri::parse("pkcs11:token=t;object=k?pin-value=314159");
    CHECK(uri.pin_value == "314159");
    CHECK(uri.to_string().find("314159") == std::string::npos);
    CHECK(uri.to_string().find("pin-value") == std::string::npos);
}

TEST_CASE("uri parse errors hide pin-value") {
    const std::string text = "pkcs11:id=%zz?pin-value=271828&module-path=/m.so";
    CHECK(p11smime::without_pin_value(text) == "pkcs11:id=%zz?pin-value=***&module-path=/m.so");
    try {
        Pkcs11Uri::parse(text);
        FAIL("a malformed URI was accepted");
    } catch (const p11smime::Error &error) {
        CHECK(std::string(error.what()).find("271828") == std::string::npos);
    }
}

TEST_CASE("uri fuzz regression inputs round trip") {
    // Inputs that once failed fuzz_uri: a NUL byte that cut the text short, and an empty id.
    for (const char *name : {"nul-byte", "empty-id"}) {
        std::ifstream file(std::string(TEST_DATA_DIR) + "/fuzz/uri/" + name, std::ios::binary);
        REQUIRE(file);
        std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
        CAPTURE(name);
        try {
            Pkcs11Uri uri = Pkcs11Uri::parse(text);
            Pkcs11Uri again = Pkcs11Uri::parse(uri.to_string());
            CHECK(again.id == uri.id);
            CHECK(again.object == uri.object);
        } catch (const p11smime::Error &error) {
            CHECK(text.find('\0') != std::string::npos);
        }
    }
}

TEST_CASE("uri empty id survives formatting") {
    Pkcs11Uri uri = Pkcs11Uri::parse("pkcs11:id=");
    REQUIRE(uri.id.has_value());
    CHECK(uri.id->empty());
    CHECK(Pkcs11Uri::parse(uri.to_string()).id == uri.id);
}
