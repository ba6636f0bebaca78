// Validate an AsyncAPI document with the official parser (@asyncapi/parser, its Spectral rules
// included) and print every diagnostic of severity error; exit 1 when there is one.
//
//   node tools/contract/validate-asyncapi.mjs schemas/json/asyncapi.json
//
// Exit codes: 0 valid, 1 the document has errors, 2 usage error.
import { resolve } from "node:path";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { Parser, fromFile, DiagnosticSeverity } = require("@asyncapi/parser");

const [file, ...rest] = process.argv.slice(2);
if (!file || rest.length > 0) {
  console.error("usage: node validate-asyncapi.mjs FILE");
  process.exit(2);
}

const parser = new Parser();
const { document, diagnostics } = await fromFile(parser, resolve(file)).parse();
const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
for (const d of errors) {
  const where = d.path && d.path.length > 0 ? d.path.join(".") : "(document)";
  const line = d.range ? `:${d.range.start.line + 1}` : "";
  console.error(`error ${d.code} at ${where}${line}: ${d.message}`);
}
if (errors.length > 0 || document === undefined) {
  console.error(`${file}: ${errors.length} error(s)`);
  process.exit(1);
}
console.log(`${file}: valid AsyncAPI ${document.version()}`);
