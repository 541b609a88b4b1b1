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

// The `usage.recorded` event, schema version 4, with every field of that version.
// Counts that do not apply are 0 and optional fields null: both may also be left out.
interface UsageRecorded {
  event_id: string;
  type: "usage.recorded";
  schema_version: 4;
  occurred_at: string;
  source: string;
  api_key_id: string;
  request_id: string;
  model: string;
  requested_model: string | null;
  provider: string | null;
  prompt_tokens: number;
  completion_tokens: number;
  cache_read_input_tokens: number; // these three are parts of prompt_tokens
  cache_creation_input_tokens: number;
  audio_input_tokens: number;
  reasoning_tokens: number; // these two are parts of completion_tokens
  audio_output_tokens: number;
  images: number; // input images, sent to the model
  output_images: number; // images the model generated
  input_seconds: string; // decimal strings, as money
  output_seconds: string;
  characters: number;
  service_tier: "priority" | "flex" | "batch" | "balanced" | "ultrafast" | "fast" | null;
  data_residency: "us" | "eu" | "fedramp" | null;
  vertex_location: string | null;
  inference_geo: string | null;
  latency_ms: number | null;
  status: "success" | "error";
  error_code: string | null;
  cost_usd: string | null;
  metadata: Record<string, string>;
  hold_id: string | null;
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
    schema_version: 4,
    occurred_at: new Date().toISOString(), // RFC 3339 in UTC: "2026-11-25T09:30:00.123Z"
    source: "gateway-ts-example",
    api_key_id: apiKeyId,
    request_id: `req-${randomUUID()}`,
    model,
    requested_model: model, // as the client asked it (an alias is allowed)
    provider: "openai",
    prompt_tokens: prompt,
    completion_tokens: completion,
    cache_read_input_tokens: cacheRead, // part of prompt_tokens, never more than it
    cache_creation_input_tokens: 0,
    audio_input_tokens: 0,
    reasoning_tokens: 0,
    audio_output_tokens: 0,
    images: 0,
    output_images: 0,
    input_seconds: "0",
    output_seconds: "0",
    characters: 0,
    service_tier: null, // standard tier: OpenAI's "default" and "auto" are null too
    data_residency: null,
    vertex_location: null,
    inference_geo: null,
    latency_ms: 842, // end to end, as the gateway measured it
    status: "success",
    error_code: null,
    cost_usd: usd(costNanoDollars), // or null: the projector prices it from the catalog
    metadata: { team: "search" },
    hold_id: null, // no budget reservation to settle (docs/budgets.md)
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
