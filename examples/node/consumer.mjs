// Print the events a meerkat worker publishes to <prefix>.events (a topic exchange whose routing
// key is the event code, e.g. input.accepted, run.completed).
//
//   node consumer.mjs [--codes CODE[,CODE...]] [--runtime ID] [--count N] [--until CODE]
//                     [--timeout SECONDS]
//
// An exclusive, auto-deleted queue is bound to the exchange with each code as binding key
// (default "#": every event). Each event (of --runtime only, when given) is printed to stdout as
// one JSON line {"code", "runtime_id", "data"}. It exits 0 after --count events or after the
// first --until event, 1 when --timeout passes first, 2 on bad options, 3 when the broker cannot
// be reached or has no <prefix>.events exchange. Once the queue is bound it prints
// "listening on ..." to stderr: events published before that are not seen.
//
// Environment: AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/), MEERKAT_TOPOLOGY_PREFIX
// (default meerkat).

import { parseArgs } from "node:util";

import amqp from "amqplib";

class UsageError extends Error {}

function options() {
  try {
    return parseOptions();
  } catch (error) {
    throw new UsageError(error.message);
  }
}

function parseOptions() {
  const { values } = parseArgs({
    options: {
      codes: { type: "string", default: "#" },
      runtime: { type: "string" },
      count: { type: "string" },
      until: { type: "string" },
      timeout: { type: "string" },
    },
  });
  const count = values.count === undefined ? undefined : Number(values.count);
  if (count !== undefined && !(Number.isInteger(count) && count > 0)) {
    throw new Error(`--count must be a positive integer, not ${values.count}`);
  }
  const timeout = values.timeout === undefined ? undefined : Number(values.timeout);
  if (timeout !== undefined && !(Number.isFinite(timeout) && timeout > 0)) {
    throw new Error(`--timeout must be a positive number of seconds, not ${values.timeout}`);
  }
  const codes = values.codes.split(",").map((code) => code.trim()).filter(Boolean);
  return { ...values, codes, count, timeout };
}

async function main() {
  const opts = options();
  const url = process.env.AMQP_URL || "amqp://guest:guest@127.0.0.1:5672/";
  const exchange = `${process.env.MEERKAT_TOPOLOGY_PREFIX || "meerkat"}.events`;
  const connection = await amqp.connect(url);
  // A channel error (e.g. 404: no such exchange) rejects the pending call; report it once, there.
  connection.on("error", () => {});
  try {
    const channel = await connection.createChannel();
    channel.on("error", () => {});
    await channel.checkExchange(exchange); // fails plainly when no worker declared it yet
    const { queue } = await channel.assertQueue("", { exclusive: true, autoDelete: true });
    for (const code of opts.codes) await channel.bindQueue(queue, exchange, code);

    let seen = 0;
    let finished = false; // deliveries already buffered after the last one are not printed
    const done = new Promise((resolve, reject) => {
      channel.consume(queue, (message) => {
        if (message === null) {
          reject(new Error("the broker cancelled the consumer"));
          return;
        }
        const event = JSON.parse(message.content.toString("utf8"));
        if (finished || (opts.runtime !== undefined && event.runtime_id !== opts.runtime)) return;
        console.log(JSON.stringify({ code: event.code, runtime_id: event.runtime_id, data: event.data }));
        seen += 1;
        if (event.code === opts.until || seen === opts.count) {
          finished = true;
          resolve(0);
        }
      }, { noAck: true }).then(
        () => console.error(`listening on ${exchange} (${opts.codes.join(", ")})`),
        reject,
      );
    });
    let timer;
    const timeout = new Promise((resolve) => {
      if (opts.timeout === undefined) return;
      timer = setTimeout(() => {
        const awaited = opts.until ? `event ${opts.until}` : `${opts.count} events`;
        console.error(`consumer: no ${awaited} within ${opts.timeout} s (${seen} seen)`);
        resolve(1);
      }, opts.timeout * 1000);
    });
    try {
      return await Promise.race([done, timeout]);
    } finally {
      clearTimeout(timer);
    }
  } finally {
    await connection.close().catch(() => {});
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error) => {
    console.error(`consumer: ${error.message}`);
    process.exitCode = error instanceof UsageError ? 2 : 3;
  },
);
