// Publish one prompt (a text block and an inline PNG) to a meerkat worker and print its outcome.
//
// The message is built by hand in the wire format (README "Topology", "For producers"), checked
// against the published JSON Schema, published to <prefix>.ingress with the runtime id as the
// routing key, and answered by the worker over direct reply-to after its commit.
//
//   node producer.mjs [--runtime ID] [--text T] [--image FILE.png] [--idempotency-key K]
//                     [--timeout SECONDS] [--schema PATH]
//
// Environment: AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/), MEERKAT_TOPOLOGY_PREFIX
// (default meerkat), MEERKAT_INPUT_SCHEMA (default ../../schemas/json/input-envelope.json).
// stdout: the outcome as one JSON line. Exit code 0 when it is accepted or deduplicated, 1 when
// it is rejected, 2 on a usage or schema error, 3 when the broker cannot be reached or no reply
// came in time.

import { randomBytes, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import amqp from "amqplib";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

const DIRECT_REPLY_TO = "amq.rabbitmq.reply-to";
const INPUT_MESSAGE_TYPE = "meerkat.input.v1";
// A 1x1 PNG, used when no --image is given.
const PIXEL_PNG =
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
const DEFAULT_SCHEMA = fileURLToPath(
  new URL("../../schemas/json/input-envelope.json", import.meta.url),
);

class Failure extends Error {
  constructor(message, exitCode) {
    super(message);
    this.exitCode = exitCode;
  }
}

/** parseArgs' own errors (an unknown option, a missing value) are usage errors. */
function usage(parse) {
  try {
    return parse();
  } catch (error) {
    throw new Failure(error.message, 2);
  }
}

/** A UUID version 7 (RFC 9562): 48 bits of Unix milliseconds, then random bits. */
export function uuidv7() {
  const bytes = randomBytes(16);
  let ms = BigInt(Date.now());
  for (let i = 5; i >= 0; i--) {
    bytes[i] = Number(ms & 0xffn);
    ms >>= 8n;
  }
  bytes[6] = (bytes[6] & 0x0f) | 0x70; // version 7
  bytes[8] = (bytes[8] & 0x3f) | 0x80; // variant 10
  const hex = bytes.toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function options() {
  const { values } = usage(() => parseArgs({
    options: {
      runtime: { type: "string", default: `rt:example:${randomUUID()}` },
      text: { type: "string", default: "hello from node" },
      image: { type: "string" },
      "idempotency-key": { type: "string" },
      timeout: { type: "string", default: "30" },
      schema: { type: "string", default: process.env.MEERKAT_INPUT_SCHEMA || DEFAULT_SCHEMA },
    },
  }));
  const timeout = Number(values.timeout);
  if (!Number.isFinite(timeout) || timeout <= 0) {
    throw new Failure(`--timeout must be a positive number of seconds, not ${values.timeout}`, 2);
  }
  return { ...values, timeout };
}

/** The message body: an InputEnvelope holding a prompt. */
function buildEnvelope(opts) {
  const image = opts.image ? usage(() => readFileSync(opts.image)).toString("base64") : PIXEL_PNG;
  const header = {
    id: uuidv7(),
    timestamp: new Date().toISOString(),
    source: { type: "operator" },
    durability: "durable",
  };
  if (opts["idempotency-key"]) header.idempotency_key = opts["idempotency-key"];
  return {
    runtime_id: opts.runtime,
    input: {
      input_type: "prompt",
      header,
      content: [
        { type: "text", text: opts.text },
        { type: "image", media_type: "image/png", source: "inline", data: image },
      ],
    },
  };
}

/** Check the body against the published JSON Schema; throws with every violation named. */
function validate(envelope, schemaPath) {
  let schema;
  try {
    schema = JSON.parse(readFileSync(schemaPath, "utf8"));
  } catch (error) {
    throw new Failure(`cannot read the schema ${schemaPath}: ${error.message}`, 2);
  }
  // strict: false ignores the non-standard "discriminator" keyword (the oneOf branches are told
  // apart by their "const" tags anyway).
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  addFormats(ajv);
  const check = ajv.compile(schema);
  if (!check(envelope)) {
    const problems = check.errors.map((e) => `${e.instancePath || "/"} ${e.message}`).join("; ");
    throw new Failure(`the message does not match ${schemaPath}: ${problems}`, 2);
  }
}

/** Publish with mandatory and direct reply-to; resolves with the reply body. */
async function request(channel, exchange, envelope, timeoutSeconds) {
  const correlationId = randomUUID();
  let settle;
  const reply = new Promise((resolve, reject) => {
    settle = { resolve, reject };
  });
  reply.catch(() => {}); // a return before the race is awaited is reported by the race
  // Direct reply-to: consume the pseudo-queue (no ack) on this channel before publishing.
  await channel.consume(
    DIRECT_REPLY_TO,
    (message) => {
      if (message === null) {
        settle.reject(new Failure("the reply consumer was cancelled by the broker", 3));
      } else if (message.properties.correlationId === correlationId) {
        settle.resolve(JSON.parse(message.content.toString("utf8")));
      }
    },
    { noAck: true },
  );
  channel.on("return", (message) => {
    settle.reject(new Failure(
      `the broker returned the message as unroutable (${message.fields.replyText}): ` +
        `is a worker with prefix ${exchange.replace(/\.ingress$/, "")} running?`,
      3,
    ));
  });
  const body = Buffer.from(JSON.stringify(envelope), "utf8");
  const messageId = envelope.input.header.id;
  await new Promise((resolve, reject) => {
    channel.publish(exchange, envelope.runtime_id, body, {
      messageId,
      type: INPUT_MESSAGE_TYPE,
      contentType: "application/json",
      contentEncoding: "utf-8",
      persistent: true,
      mandatory: true,
      replyTo: DIRECT_REPLY_TO,
      correlationId,
      timestamp: Math.floor(Date.now() / 1000),
    }, (error) => (error
      ? reject(new Failure(`the broker refused the message: ${channel.closedBy || error.message}`, 3))
      : resolve()));
  });
  console.error(`published input ${messageId} for ${envelope.runtime_id} to ${exchange}`);
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Failure(
      `no reply for input ${messageId} within ${timeoutSeconds} s (is a worker consuming ${exchange}?)`,
      3,
    )), timeoutSeconds * 1000);
  });
  try {
    return await Promise.race([reply, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function main() {
  const opts = options();
  const url = process.env.AMQP_URL || "amqp://guest:guest@127.0.0.1:5672/";
  const prefix = process.env.MEERKAT_TOPOLOGY_PREFIX || "meerkat";
  const envelope = buildEnvelope(opts);
  validate(envelope, opts.schema);

  let connection;
  try {
    connection = await amqp.connect(url);
  } catch (error) {
    throw new Failure(`cannot connect to the broker: ${error.message}`, 3);
  }
  connection.on("error", (error) => console.error(`producer: connection error: ${error.message}`));
  try {
    const channel = await connection.createConfirmChannel();
    // A closed channel (e.g. 404: no <prefix>.ingress yet) is named in the error thrown below.
    channel.on("error", (error) => {
      channel.closedBy = error.message;
    });
    const reply = await request(channel, `${prefix}.ingress`, envelope, opts.timeout);
    const outcome = reply.outcome;
    console.log(JSON.stringify(outcome));
    const ok = outcome.outcome_type === "accepted" || outcome.outcome_type === "deduplicated";
    if (!ok) {
      const reason = outcome.reason ? ` (${outcome.reason.reject_type})` : "";
      console.error(`input ${envelope.input.header.id} was ${outcome.outcome_type}${reason}`);
    }
    return ok ? 0 : 1;
  } finally {
    await connection.close().catch(() => {});
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error) => {
    console.error(`producer: ${error.message}`);
    process.exitCode = error instanceof Failure ? error.exitCode : 3;
  },
);
