// Package tokenizer reads Hugging Face tokenizer.json files: it says which bytes
// every vocabulary token stands for, matches two vocabularies by those bytes
// (the shared vocabulary of LoRASuite step 1), and encodes text to ids.
//
// # Token bytes
//
// A tokenizer.json stores tokens as strings in one of two encodings:
//
//   - byte-level BPE (GPT-2, Llama-3, Qwen): every byte is written as one rune
//     of the GPT-2 byte-to-unicode table, so " the" is stored as "Ġthe" and
//     "\n" as "Ċ". A tokenizer is byte-level when its decoder or pre-tokenizer
//     contains a ByteLevel step.
//   - SentencePiece-style BPE (Llama-2, Mistral): text is stored as UTF-8 with
//     spaces written as "▁" (U+2581), and, with byte_fallback, raw bytes as
//     "<0xNN>" tokens.
//
// TokenBytes undoes that encoding, so "▁the" and "Ġthe" both decode to " the"
// and "<0x0A>" and "Ċ" both decode to "\n".
//
// Added tokens (tokenizer.json "added_tokens") are literal text: their bytes
// are their content, undecoded. Special added tokens (special: true, such as
// "<s>" or "<|im_start|>") are control tokens whose meaning is a convention of
// one model family, and whose embeddings are often untrained in base models;
// SharedVocab therefore never matches them, not even by content. Non-special
// added tokens are matched by content like any other token.
//
// # Encoding
//
// Encode follows the pipeline of the Hugging Face tokenizers library, and where
// the Rust crate and its JavaScript port (@huggingface/tokenizers) differ it
// follows the JavaScript port, which the conformance test checks against:
// added tokens are split out of the raw text first (longest match, leftmost),
// each remaining section is normalized (NFC/NFD/NFKC/NFKD, Prepend, Replace,
// Lowercase, Strip, Sequence), split again on added tokens whose content is
// normalized, pre-tokenized (ByteLevel, Split, Metaspace, Digits, Punctuation,
// Whitespace, WhitespaceSplit, Sequence), run through the BPE model (merge
// ranks, ignore_merges, byte_fallback, unk), and finally the post-processor
// adds special tokens (TemplateProcessing, Bert, Roberta, ByteLevel, Sequence).
// Split patterns that need lookahead (GPT-2, Llama-3, Qwen2) are compiled with
// github.com/dlclark/regexp2. Only BPE models are supported; Load rejects
// WordPiece and Unigram with an error naming the file.
package tokenizer
