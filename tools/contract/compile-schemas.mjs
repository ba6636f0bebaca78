// Compile every JSON Schema (*.json with a "$schema", so not the AsyncAPI document) in a
// directory with Ajv in strict mode, draft 2020-12, formats from ajv-formats; exit 1 on any
// error, printing each.
//
//   node tools/contract/compile-schemas.mjs schemas/json
//
// Exit codes: 0 every schema compiles, 1 a schema does not (or there is none), 2 usage error.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const Ajv2020 = require("ajv/dist/2020").default;
const addFormats = require("ajv-formats").default;

const DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema";

const [dir, ...rest] = process.argv.slice(2);
if (!dir || rest.length > 0) {
  console.error("usage: node compile-schemas.mjs DIR");
  process.exit(2);
}

let failures = 0;
let compiled = 0;
for (const name of readdirSync(dir).filter((n) => n.endsWith(".json")).sort()) {
  let schema;
  try {
    schema = JSON.parse(readFileSync(join(dir, name), "utf8"));
  } catch (error) {
    console.error(`error ${name}: not JSON: ${error.message}`);
    failures += 1;
    continue;
  }
  if ("asyncapi" in schema) continue;
  if (schema.$schema !== DRAFT_2020_12) {
    console.error(`error ${name}: "$schema" is ${JSON.stringify(schema.$schema)}, not ${DRAFT_2020_12}`);
    failures += 1;
    continue;
  }
  if (typeof schema.$id !== "string") {
    console.error(`error ${name}: no "$id"`);
    failures += 1;
    continue;
  }
  // A fresh instance per file: strict mode throws on the first problem; warnings become errors.
  const ajv = new Ajv2020({
    strict: true,
    allErrors: true,
    logger: { log() {}, warn: (message) => { throw new Error(message); }, error: console.error },
  });
  addFormats(ajv);
  try {
    ajv.compile(schema);
    compiled += 1;
  } catch (error) {
    console.error(`error ${name}: ${error.message}`);
    failures += 1;
  }
}
if (compiled === 0 && failures === 0) {
  console.error(`error ${dir}: no JSON Schema found`);
  process.exit(1);
}
if (failures > 0) {
  console.error(`${dir}: ${failures} schema(s) failed`);
  process.exit(1);
}
console.log(`${dir}: ${compiled} schema(s) compile (Ajv 2020-12, strict)`);
