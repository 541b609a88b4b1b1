// A complete minimal usage-ledger producer in TypeScript, with kafkajs.
//
//   npm ci && npm run build
//   KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:59092 TOPIC_USAGE=ledger.usage node build/producer.js
//
// It sends a few `usage.recorded` events (docs/events.md) and prints one JSON line per
// event: the event and the partition and offset Kafka gave it.
import { randomUUID } from "node:crypto";
import { CompressionTypes, Kafka, Partitioners, logLevel } from "kafkajs";

const bootstrap = (process.env.KAFKA_BOOTSTRAP_SERVERS ?? "127.0.0.1:59092").split(",");
const topic = process.env.TOPIC_USAGE ?? "ledger.usage";

interface UsageRecorded {
  event_id: string;
  type: "usage.recorded";
  schema_version: 2;
  occurred_at: string;
  source: string;
  api_key_id: string;
  request_id: string;
  model: string;
  provider: string | null;
  prompt_tokens: number;
  completion_tokens: number;
  cache_read_input_tokens: number;
  status: "success" | "error";
  cost_usd: string | null;
}

// Money is a decimal string. Keep amounts as integers (here nano-dollars) and format them
// exactly; a JavaScript number would round 0.1 + 0.2 before the ledger ever saw it.
function usd(nanoDollars: bigint): string {
  const units = nanoDollars / 1_000_000_000n;
  const fraction = (nanoDollars % 1_000_000_000n).toString().padStart(9, "0");
  return `${units}.${fraction}`;
}

function usage(apiKeyId: string, model: string, prompt: number, completion: number,
               cacheRead: number, costNanoDollars: bigint): UsageRecorded {
  return {
    event_id: randomUUID(), // v4, chosen once: a re-send of this event keeps it
    type: "usage.recorded",
    schema_version: 2,
    occurred_at: new Date().toISOString(), // RFC 3339 in UTC: "2026-11-25T09:30:00.123Z"
    source: "gateway-ts-example",
    api_key_id: apiKeyId,
    request_id: `req-${randomUUID()}`,
    model,
    provider: "openai",
    prompt_tokens: prompt,
    completion_tokens: completion,
    cache_read_input_tokens: cacheRead, // part of prompt_tokens, never more than it
    status: "success",
    cost_usd: usd(costNanoDollars), // or null: the projector prices it from the catalog
  };
}

async function main(): Promise<void> {
  const kafka = new Kafka({ clientId: "gateway-ts-example", brokers: bootstrap,
                            logLevel: logLevel.WARN });
  // DefaultPartitioner is murmur2 of the key, as the Java client and ledger's own producer:
  // one key's events land in one partition whichever gateway sent them.
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  try {
    const keys = [randomUUID(), randomUUID(), randomUUID()];
    const events = keys.flatMap((key, i) => [
      usage(key, "gpt-4o-mini", 1200 + i, 350, 1024, 389_000n + BigInt(i)),
      usage(key, "gpt-4o", 800, 120 + i, 0, 3_200_000n),
    ]);
    for (const event of events) {
      const [result] = await producer.send({
        topic,
        acks: -1, // all in-sync replicas
        compression: CompressionTypes.GZIP, // the ledger reads gzip, snappy, lz4 and zstd
        messages: [{
          key: event.api_key_id, // the partition key: the api key id
          value: JSON.stringify(event),
          headers: { type: event.type, schema_version: String(event.schema_version) },
        }],
      });
      console.log(JSON.stringify({ event, partition: result.partition,
                                   offset: result.baseOffset }));
    }
  } finally {
    await producer.disconnect();
  }
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : String(error));
  process.exit(1);
});
