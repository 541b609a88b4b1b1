// The JSON Schema's second validator: ajv in strict mode (Draft 2020-12) with ajv-formats.
//
//   node ajv_check.mjs SCHEMA.json < cases.jsonl > verdicts.jsonl
//
// Compiles SCHEMA.json (a compile error, strict-mode ones included, exits 2 with one line on
// stderr), prints {"ready": true}, then answers each input line {"text": "<message body>"}
// with one line {"valid": bool, "error": string|null}, in order and flushed per line, so a
// caller may send a whole batch or one case at a time. A body that is not JSON is invalid,
// as it is for every JSON Schema validator: there is no instance to validate.
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

let validate;
try {
  const ajv = new Ajv2020({ strict: true, allErrors: false });
  addFormats(ajv); // "full" mode: date-time checks the calendar, as RFC 3339 does
  validate = ajv.compile(JSON.parse(readFileSync(process.argv[2], "utf8")));
} catch (error) {
  process.stderr.write(`ajv cannot compile ${process.argv[2]}: ${error.message}\n`);
  process.exit(2);
}

const answer = (valid, error) => process.stdout.write(JSON.stringify({ valid, error }) + "\n");
process.stdout.write(JSON.stringify({ ready: true }) + "\n");

for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
  if (line === "") continue;
  const { text } = JSON.parse(line);
  let instance;
  try {
    instance = JSON.parse(text);
  } catch (error) {
    answer(false, `not JSON: ${error.message}`);
    continue;
  }
  if (validate(instance)) {
    answer(true, null);
  } else {
    const first = validate.errors[0];
    answer(false, `${first.instancePath || "/"} ${first.message}`);
  }
}
