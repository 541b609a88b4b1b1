// A complete minimal usage-ledger producer in Go, standard library only.
//
//	go build -o producer . &&
//	KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:59092 TOPIC_USAGE=ledger.usage ./producer
//
// It sends a few `usage.recorded` events (docs/events.md) and prints one JSON line per
// event: the event and the partition and offset Kafka gave it. It speaks the Kafka protocol
// itself (Metadata v1, Produce v3, record batch v2, gzip) so that it builds with nothing but
// a Go toolchain; a gateway would use a client library, configured as docs/events.md says.
package main

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// UsageRecorded is the `usage.recorded` event, schema version 4, with every field of that
// version. Counts that do not apply are 0 and optional fields nil (null): both may also be
// left out, except PromptTokens and CompletionTokens (never tag those two omitempty).
type UsageRecorded struct {
	EventID          string  `json:"event_id"`
	Type             string  `json:"type"`
	SchemaVersion    int     `json:"schema_version"`
	OccurredAt       string  `json:"occurred_at"`
	Source           string  `json:"source"`
	APIKeyID         string  `json:"api_key_id"`
	RequestID        string  `json:"request_id"`
	Model            string  `json:"model"`
	RequestedModel   *string `json:"requested_model"`
	Provider         *string `json:"provider"`
	PromptTokens     int64   `json:"prompt_tokens"`
	CompletionTokens int64   `json:"completion_tokens"`
	// Parts of PromptTokens.
	CacheReadInputTokens     int64 `json:"cache_read_input_tokens"`
	CacheCreationInputTokens int64 `json:"cache_creation_input_tokens"`
	AudioInputTokens         int64 `json:"audio_input_tokens"`
	// Parts of CompletionTokens.
	ReasoningTokens   int64 `json:"reasoning_tokens"`
	AudioOutputTokens int64 `json:"audio_output_tokens"`
	Images            int64 `json:"images"`        // input images, sent to the model
	OutputImages      int64 `json:"output_images"` // images the model generated
	// Decimal strings, as money; left out when empty (read as 0): an empty string is refused.
	InputSeconds  string `json:"input_seconds,omitempty"`
	OutputSeconds string `json:"output_seconds,omitempty"`
	Characters    int64  `json:"characters"`
	// How the request was served; nil: standard tier, no regional processing.
	ServiceTier    *string           `json:"service_tier"`   // "priority", "flex", "batch", ...
	DataResidency  *string           `json:"data_residency"` // "us", "eu" or "fedramp"
	VertexLocation *string           `json:"vertex_location"`
	InferenceGeo   *string           `json:"inference_geo"`
	LatencyMs      *int64            `json:"latency_ms"`
	Status         string            `json:"status"`
	ErrorCode      *string           `json:"error_code"`
	CostUSD        *string           `json:"cost_usd"` // a decimal string; nil: priced by the ledger
	Metadata       map[string]string `json:"metadata"` // a nil map is null, read as {}
	HoldID         *string           `json:"hold_id"`  // nil: no budget reservation to settle
}

// newUUID returns a random (version 4) UUID: the event_id, chosen once per event and kept
// when the event is sent again.
func newUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// usd formats integer nano-dollars as an exact decimal string ("0.000389000"): money never
// passes through a float64.
func usd(nanoDollars int64) *string {
	s := fmt.Sprintf("%d.%09d", nanoDollars/1_000_000_000, nanoDollars%1_000_000_000)
	return &s
}

func usage(apiKeyID, model string, prompt, completion, cacheRead, costNanoDollars int64) UsageRecorded {
	provider := "openai"
	latency := int64(842) // end to end, as the gateway measured it
	return UsageRecorded{
		EventID:       newUUID(),
		Type:          "usage.recorded",
		SchemaVersion: 4,
		// RFC 3339 with an offset; the ledger keeps microseconds and truncates the rest.
		OccurredAt:           time.Now().UTC().Format(time.RFC3339Nano),
		Source:               "gateway-go-example",
		APIKeyID:             apiKeyID,
		RequestID:            "req-" + newUUID(),
		Model:                model,
		RequestedModel:       &model, // as the client asked it (an alias is allowed)
		Provider:             &provider,
		PromptTokens:         prompt,
		CompletionTokens:     completion,
		CacheReadInputTokens: cacheRead, // part of PromptTokens, never more than it
		InputSeconds:         "0",
		OutputSeconds:        "0",
		LatencyMs:            &latency,
		Status:               "success",
		CostUSD:              usd(costNanoDollars),
		Metadata:             map[string]string{"team": "search"},
	}
}

// Murmur2 is Kafka's key hash (the Java client's and the ledger's) as a hash.Hash32, so it
// also plugs into sarama, whose own default is FNV-1a:
//
//	config.Producer.Partitioner = sarama.NewCustomPartitioner(
//		sarama.WithAbsFirst(), sarama.WithCustomHashFunction(NewMurmur2))
type Murmur2 struct{ data []byte }

func NewMurmur2() hash.Hash32 { return &Murmur2{} }

func (m *Murmur2) Write(p []byte) (int, error) { m.data = append(m.data, p...); return len(p), nil }
func (m *Murmur2) Reset()                      { m.data = m.data[:0] }
func (m *Murmur2) Size() int                   { return 4 }
func (m *Murmur2) BlockSize() int              { return 4 }
func (m *Murmur2) Sum(b []byte) []byte         { return binary.BigEndian.AppendUint32(b, m.Sum32()) }

func (m *Murmur2) Sum32() uint32 {
	const seed, mul, r = uint32(0x9747b28c), uint32(0x5bd1e995), 24
	b := m.data
	h := seed ^ uint32(len(b))
	for ; len(b) >= 4; b = b[4:] {
		k := binary.LittleEndian.Uint32(b)
		k *= mul
		k ^= k >> r
		k *= mul
		h *= mul
		h ^= k
	}
	switch len(b) {
	case 3:
		h ^= uint32(b[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(b[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(b[0])
		h *= mul
	}
	h ^= h >> 13
	h *= mul
	h ^= h >> 15
	return h
}

// partitionFor is Kafka's default partitioner for a keyed record.
func partitionFor(key []byte, partitions int32) int32 {
	h := NewMurmur2()
	h.Write(key)
	return int32(h.Sum32()&0x7fffffff) % partitions
}

// --- the Kafka protocol, just enough to produce ---

type encoder struct{ bytes.Buffer }

func (e *encoder) i8(v int8)         { e.WriteByte(byte(v)) }
func (e *encoder) i16(v int16)       { e.Write(binary.BigEndian.AppendUint16(nil, uint16(v))) }
func (e *encoder) i32(v int32)       { e.Write(binary.BigEndian.AppendUint32(nil, uint32(v))) }
func (e *encoder) i64(v int64)       { e.Write(binary.BigEndian.AppendUint64(nil, uint64(v))) }
func (e *encoder) str(s string)      { e.i16(int16(len(s))); e.WriteString(s) }
func (e *encoder) varint(v int64)    { e.Write(binary.AppendVarint(nil, v)) }
func (e *encoder) varbytes(b []byte) { e.varint(int64(len(b))); e.Write(b) }

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) take(n int) []byte {
	if d.err != nil || n < 0 || len(d.b) < n {
		d.err = errors.New("short response")
		return make([]byte, max(n, 0))
	}
	out := d.b[:n]
	d.b = d.b[n:]
	return out
}
func (d *decoder) i16() int16 { return int16(binary.BigEndian.Uint16(d.take(2))) }
func (d *decoder) i32() int32 { return int32(binary.BigEndian.Uint32(d.take(4))) }
func (d *decoder) i64() int64 { return int64(binary.BigEndian.Uint64(d.take(8))) }
func (d *decoder) str() string {
	n := d.i16()
	if n < 0 {
		return ""
	}
	return string(d.take(int(n)))
}

type broker struct {
	conn        net.Conn
	correlation int32
}

func dial(address string) (*broker, error) {
	conn, err := net.DialTimeout("tcp", address, 10*time.Second)
	if err != nil {
		return nil, err
	}
	return &broker{conn: conn}, nil
}

// call sends one request (header v1) and returns the response body after its header.
func (b *broker) call(apiKey, version int16, body []byte) (*decoder, error) {
	b.correlation++
	var req encoder
	req.i16(apiKey)
	req.i16(version)
	req.i32(b.correlation)
	req.str("gateway-go-example")
	req.Write(body)
	frame := binary.BigEndian.AppendUint32(nil, uint32(req.Len()))
	b.conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := b.conn.Write(append(frame, req.Bytes()...)); err != nil {
		return nil, err
	}
	var size [4]byte
	if _, err := io.ReadFull(b.conn, size[:]); err != nil {
		return nil, err
	}
	resp := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(b.conn, resp); err != nil {
		return nil, err
	}
	d := &decoder{b: resp}
	if got := d.i32(); got != b.correlation {
		return nil, fmt.Errorf("correlation id %d, expected %d", got, b.correlation)
	}
	return d, nil
}

type partitionInfo struct{ leader string }

// metadata returns each partition's leader address (Metadata v1).
func metadata(b *broker, topic string) ([]partitionInfo, error) {
	var req encoder
	req.i32(1)
	req.str(topic)
	d, err := b.call(3, 1, req.Bytes())
	if err != nil {
		return nil, err
	}
	addresses := map[int32]string{}
	for n := d.i32(); n > 0 && d.err == nil; n-- {
		node := d.i32()
		host := d.str()
		port := d.i32()
		d.str() // rack
		addresses[node] = net.JoinHostPort(host, strconv.Itoa(int(port)))
	}
	d.i32() // controller id
	var partitions []partitionInfo
	for n := d.i32(); n > 0 && d.err == nil; n-- {
		if code := d.i16(); code != 0 {
			return nil, fmt.Errorf("metadata for topic %s: error code %d", topic, code)
		}
		d.str()   // name
		d.take(1) // is_internal
		count := d.i32()
		partitions = make([]partitionInfo, count)
		for ; count > 0 && d.err == nil; count-- {
			d.i16() // partition error code
			index := d.i32()
			leader := d.i32()
			for r := d.i32(); r > 0; r-- { // replicas
				d.i32()
			}
			for r := d.i32(); r > 0; r-- { // in-sync replicas
				d.i32()
			}
			if int(index) < len(partitions) {
				partitions[index] = partitionInfo{leader: addresses[leader]}
			}
		}
	}
	if d.err == nil && len(partitions) == 0 {
		return nil, fmt.Errorf("topic %s not found", topic)
	}
	return partitions, d.err
}

type message struct {
	key, value []byte
	headers    [][2]string
}

// recordBatch encodes messages as one gzip-compressed record batch (magic 2).
func recordBatch(messages []message) []byte {
	now := time.Now().UnixMilli()
	var records encoder
	for i, m := range messages {
		var r encoder
		r.i8(0)     // attributes
		r.varint(0) // timestamp delta
		r.varint(int64(i))
		r.varbytes(m.key)
		r.varbytes(m.value)
		r.varint(int64(len(m.headers)))
		for _, h := range m.headers {
			r.varbytes([]byte(h[0]))
			r.varbytes([]byte(h[1]))
		}
		records.varint(int64(r.Len()))
		records.Write(r.Bytes())
	}
	var compressed bytes.Buffer
	zw := gzip.NewWriter(&compressed)
	zw.Write(records.Bytes())
	zw.Close()

	var tail encoder // from attributes to the end: what the CRC covers
	tail.i16(1)      // attributes: compression 1 = gzip
	tail.i32(int32(len(messages) - 1))
	tail.i64(now) // first timestamp
	tail.i64(now) // max timestamp
	tail.i64(-1)  // producer id: not idempotent
	tail.i16(-1)  // producer epoch
	tail.i32(-1)  // base sequence
	tail.i32(int32(len(messages)))
	tail.Write(compressed.Bytes())

	var batch encoder
	batch.i64(0)                             // base offset, set by the broker
	batch.i32(int32(4 + 1 + 4 + tail.Len())) // length of what follows
	batch.i32(-1)                            // partition leader epoch
	batch.i8(2)                              // magic
	batch.i32(int32(crc32.Checksum(tail.Bytes(), crc32.MakeTable(crc32.Castagnoli))))
	batch.Write(tail.Bytes())
	return batch.Bytes()
}

// produce sends one batch to a partition (Produce v3, acks=all) and returns its base offset.
func produce(b *broker, topic string, partition int32, messages []message) (int64, error) {
	var req encoder
	req.i16(-1) // transactional id: null
	req.i16(-1) // acks: all in-sync replicas
	req.i32(30_000)
	req.i32(1)
	req.str(topic)
	req.i32(1)
	req.i32(partition)
	batch := recordBatch(messages)
	req.i32(int32(len(batch)))
	req.Write(batch)
	d, err := b.call(0, 3, req.Bytes())
	if err != nil {
		return 0, err
	}
	d.i32() // topics
	d.str()
	d.i32() // partitions
	d.i32() // index
	code := d.i16()
	offset := d.i64()
	if d.err == nil && code != 0 {
		return 0, fmt.Errorf("produce to %s[%d]: error code %d", topic, partition, code)
	}
	return offset, d.err
}

func run() error {
	bootstrap := strings.Split(envOr("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:59092"), ",")[0]
	topic := envOr("TOPIC_USAGE", "ledger.usage")
	seed, err := dial(bootstrap)
	if err != nil {
		return err
	}
	defer seed.conn.Close()
	partitions, err := metadata(seed, topic)
	if err != nil {
		return err
	}

	keys := []string{newUUID(), newUUID(), newUUID()}
	var events []UsageRecorded
	for i, key := range keys {
		events = append(events,
			usage(key, "gpt-4o-mini", 1200+int64(i), 350, 1024, 389_000+int64(i)),
			usage(key, "gpt-4o", 800, 120+int64(i), 0, 3_200_000))
	}

	// One batch per partition, in the order the events were made.
	byPartition := map[int32][]UsageRecorded{}
	var order []int32
	for _, event := range events {
		p := partitionFor([]byte(event.APIKeyID), int32(len(partitions)))
		if byPartition[p] == nil {
			order = append(order, p)
		}
		byPartition[p] = append(byPartition[p], event)
	}
	out := json.NewEncoder(os.Stdout)
	for _, p := range order {
		var messages []message
		for _, event := range byPartition[p] {
			value, err := json.Marshal(event)
			if err != nil {
				return err
			}
			messages = append(messages, message{
				key:   []byte(event.APIKeyID), // the partition key: the api key id
				value: value,
				headers: [][2]string{{"type", event.Type},
					{"schema_version", strconv.Itoa(event.SchemaVersion)}},
			})
		}
		leader, err := dial(partitions[p].leader)
		if err != nil {
			return err
		}
		base, err := produce(leader, topic, p, messages)
		leader.conn.Close()
		if err != nil {
			return err
		}
		for i, event := range byPartition[p] {
			out.Encode(map[string]any{"event": event, "partition": p,
				"offset": strconv.FormatInt(base+int64(i), 10)})
		}
	}
	return nil
}

func envOr(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
