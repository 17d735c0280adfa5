#pragma once
// The Unicode operations the CLIP tokenizer needs, with Python's semantics (str.lower, str.split,
// unicodedata categories and NFC), backed by ICU.
#include <string>
#include <string_view>
#include <vector>

namespace streamgen::text {

// UTF-8 -> code points; invalid sequences become U+FFFD.
std::u32string decode_utf8(std::string_view s);
std::string encode_utf8(std::u32string_view s);
std::string encode_utf8(char32_t c);

bool is_letter(char32_t c);            // \p{L}
bool is_number(char32_t c);            // \p{N}
bool is_unicode_whitespace(char32_t c);  // the regex module's \s (White_Space)
bool is_python_space(char32_t c);      // str.isspace / str.split separators

std::u32string nfc(const std::u32string& s);
std::u32string to_lower_python(const std::u32string& s);  // full case mapping, final sigma

// transformers' BasicTokenizer(do_lower_case, strip_accents=False, do_split_on_punc=False):
// drop NUL, U+FFFD and control/format characters, map whitespace to ' ', isolate CJK
// ideographs, NFC, split on whitespace, lower-case each word; returns the words.
std::vector<std::u32string> basic_clean_words(std::string_view utf8);

}  // namespace streamgen::text
