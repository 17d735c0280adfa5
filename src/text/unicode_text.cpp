#include "unicode_text.h"

#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include "streamgen/error.h"

namespace streamgen::text {
namespace {

std::u16string to_utf16(const std::u32string& s) {
  UErrorCode err = U_ZERO_ERROR;
  int32_t len = 0;
  u_strFromUTF32(nullptr, 0, &len, reinterpret_cast<const UChar32*>(s.data()), static_cast<int32_t>(s.size()), &err);
  std::u16string out(static_cast<std::size_t>(len), u'\0');
  err = U_ZERO_ERROR;
  u_strFromUTF32(reinterpret_cast<UChar*>(out.data()), len, nullptr, reinterpret_cast<const UChar32*>(s.data()),
                 static_cast<int32_t>(s.size()), &err);
  if (U_FAILURE(err)) throw Error(std::string("UTF-32 to UTF-16 conversion failed: ") + u_errorName(err));
  return out;
}

std::u32string to_utf32(const std::u16string& s) {
  UErrorCode err = U_ZERO_ERROR;
  int32_t len = 0;
  u_strToUTF32(nullptr, 0, &len, reinterpret_cast<const UChar*>(s.data()), static_cast<int32_t>(s.size()), &err);
  std::u32string out(static_cast<std::size_t>(len), U'\0');
  err = U_ZERO_ERROR;
  u_strToUTF32(reinterpret_cast<UChar32*>(out.data()), len, nullptr, reinterpret_cast<const UChar*>(s.data()),
               static_cast<int32_t>(s.size()), &err);
  if (U_FAILURE(err)) throw Error(std::string("UTF-16 to UTF-32 conversion failed: ") + u_errorName(err));
  return out;
}

bool is_control(char32_t c) {  // transformers' _is_control: any category C* except \t \n \r
  if (c == U'\t' || c == U'\n' || c == U'\r') return false;
  switch (u_charType(static_cast<UChar32>(c))) {
    case U_CONTROL_CHAR:
    case U_FORMAT_CHAR:
    case U_PRIVATE_USE_CHAR:
    case U_SURROGATE:
    case U_UNASSIGNED:
      return true;
    default:
      return false;
  }
}

bool is_whitespace_basic(char32_t c) {  // transformers' _is_whitespace
  return c == U' ' || c == U'\t' || c == U'\n' || c == U'\r' || u_charType(static_cast<UChar32>(c)) == U_SPACE_SEPARATOR;
}

bool is_cjk_ideograph(char32_t c) {  // the CJK Unified Ideograph blocks BERT's tokenizer isolates
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

std::vector<std::u32string> split_python(const std::u32string& s) {
  std::vector<std::u32string> out;
  std::u32string cur;
  for (char32_t c : s) {
    if (is_python_space(c)) {
      if (!cur.empty()) out.push_back(std::move(cur));
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

}  // namespace

std::u32string decode_utf8(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  std::size_t i = 0;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  while (i < s.size()) {
    const unsigned char b = p[i];
    int len = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 0;
    char32_t cp = len == 1 ? b : len == 2 ? (b & 0x1F) : len == 3 ? (b & 0x0F) : (b & 0x07);
    bool ok = len > 0 && i + static_cast<std::size_t>(len) <= s.size();
    for (int k = 1; ok && k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) ok = false;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    // Overlong forms, surrogates and out-of-range values are invalid UTF-8 too.
    if (ok && ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
               (cp >= 0xD800 && cp <= 0xDFFF)))
      ok = false;
    if (!ok) {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    out.push_back(cp);
    i += static_cast<std::size_t>(len);
  }
  return out;
}

std::string encode_utf8(char32_t c) {
  std::string out;
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
  return out;
}

std::string encode_utf8(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) out += encode_utf8(c);
  return out;
}

bool is_letter(char32_t c) {
  switch (u_charType(static_cast<UChar32>(c))) {
    case U_UPPERCASE_LETTER:
    case U_LOWERCASE_LETTER:
    case U_TITLECASE_LETTER:
    case U_MODIFIER_LETTER:
    case U_OTHER_LETTER:
      return true;
    default:
      return false;
  }
}

bool is_number(char32_t c) {
  switch (u_charType(static_cast<UChar32>(c))) {
    case U_DECIMAL_DIGIT_NUMBER:
    case U_LETTER_NUMBER:
    case U_OTHER_NUMBER:
      return true;
    default:
      return false;
  }
}

bool is_unicode_whitespace(char32_t c) { return u_isUWhiteSpace(static_cast<UChar32>(c)); }

bool is_python_space(char32_t c) {
  // CPython's _PyUnicode_IsWhitespace: bidi class WS, B or S, or category Zs.
  if ((c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85) return true;
  if (c < 0x80) return false;
  const auto bidi = u_charDirection(static_cast<UChar32>(c));
  return bidi == U_WHITE_SPACE_NEUTRAL || bidi == U_BLOCK_SEPARATOR || bidi == U_SEGMENT_SEPARATOR ||
         u_charType(static_cast<UChar32>(c)) == U_SPACE_SEPARATOR;
}

std::u32string nfc(const std::u32string& s) {
  UErrorCode err = U_ZERO_ERROR;
  const UNormalizer2* norm = unorm2_getNFCInstance(&err);
  if (U_FAILURE(err)) throw Error(std::string("ICU NFC normaliser unavailable: ") + u_errorName(err));
  const auto in = to_utf16(s);
  std::u16string out(in.size() * 3 + 16, u'\0');
  const int32_t len = unorm2_normalize(norm, reinterpret_cast<const UChar*>(in.data()), static_cast<int32_t>(in.size()),
                                       reinterpret_cast<UChar*>(out.data()), static_cast<int32_t>(out.size()), &err);
  if (U_FAILURE(err)) throw Error(std::string("NFC normalisation failed: ") + u_errorName(err));
  out.resize(static_cast<std::size_t>(len));
  return to_utf32(out);
}

std::u32string to_lower_python(const std::u32string& s) {
  const auto in = to_utf16(s);
  std::u16string out(in.size() * 3 + 16, u'\0');
  UErrorCode err = U_ZERO_ERROR;
  // "root": no language-specific rules (Turkish dotless i etc.), like Python's str.lower().
  const int32_t len = u_strToLower(reinterpret_cast<UChar*>(out.data()), static_cast<int32_t>(out.size()),
                                   reinterpret_cast<const UChar*>(in.data()), static_cast<int32_t>(in.size()), "root", &err);
  if (U_FAILURE(err)) throw Error(std::string("lower-casing failed: ") + u_errorName(err));
  out.resize(static_cast<std::size_t>(len));
  return to_utf32(out);
}

std::vector<std::u32string> basic_clean_words(std::string_view utf8) {
  std::u32string cleaned;
  for (char32_t c : decode_utf8(utf8)) {
    if (c == 0 || c == 0xFFFD || is_control(c)) continue;
    if (is_whitespace_basic(c)) {
      cleaned.push_back(U' ');
    } else if (is_cjk_ideograph(c)) {
      cleaned.push_back(U' ');
      cleaned.push_back(c);
      cleaned.push_back(U' ');
    } else {
      cleaned.push_back(c);
    }
  }
  std::vector<std::u32string> words;
  for (const auto& w : split_python(nfc(cleaned)))
    for (auto& part : split_python(to_lower_python(w))) words.push_back(std::move(part));
  return words;
}

}  // namespace streamgen::text
