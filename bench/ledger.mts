// Chooses the ledger's storage by measurement: appends of settlement-sized records, each durable (fsynced)
// before it counts, as KeyProxy needs them. Run: npm run --silent bench:ledger -- [dir] > docs/ledger.md
import { closeSync, fdatasyncSync, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { DatabaseSync } from "node:sqlite";
import { encodeRecord, LedgerStore } from "../proxy-image/src/ledgerStore.ts";

const dir = mkdtempSync(path.join(process.argv[2] ?? tmpdir(), "ledger-bench-"));
const RECORDS = 2000;
const CONCURRENCY = 64;
const record = (i: number) => ({ t: "settle" as const, id: `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`, micros: 1234 + i, at: 1_795_000_000_000 + i });

interface Result {
    name: string;
    perSecond: number;
    p50: number;
    p99: number;
}

function summarize(name: string, latencies: number[], seconds: number): Result {
    latencies.sort((a, b) => a - b);
    const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))];
    return { name, perSecond: RECORDS / seconds, p50: at(0.5), p99: at(0.99) };
}

async function concurrently(append: (i: number) => Promise<void>): Promise<{ latencies: number[]; seconds: number }> {
    const latencies: number[] = [];
    let next = 0;
    const started = performance.now();
    await Promise.all(
        Array.from({ length: CONCURRENCY }, async () => {
            while (next < RECORDS) {
                const i = next++;
                const t0 = performance.now();
                await append(i);
                latencies.push(performance.now() - t0);
            }
        }),
    );
    return { latencies, seconds: (performance.now() - started) / 1000 };
}

const results: Result[] = [];

{
    const fd = openSync(path.join(dir, "serial.log"), "a");
    const latencies: number[] = [];
    const started = performance.now();
    for (let i = 0; i < RECORDS; i++) {
        const t0 = performance.now();
        writeSync(fd, encodeRecord(record(i)));
        fdatasyncSync(fd);
        latencies.push(performance.now() - t0);
    }
    closeSync(fd);
    results.push(summarize("append-only file, one fdatasync per record", latencies, (performance.now() - started) / 1000));
}

{
    const store = LedgerStore.open(path.join(dir, "group.log"), () => [], () => undefined);
    const { latencies, seconds } = await concurrently((i) => store.append(record(i)));
    await store.close();
    results.push(summarize(`append-only file, group commit (${CONCURRENCY} concurrent)`, latencies, seconds));
}

{
    const db = new DatabaseSync(path.join(dir, "ledger.sqlite"));
    db.exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; CREATE TABLE ledger (id TEXT, micros INTEGER, at INTEGER)");
    const insert = db.prepare("INSERT INTO ledger VALUES (?, ?, ?)");
    const latencies: number[] = [];
    const started = performance.now();
    for (let i = 0; i < RECORDS; i++) {
        const t0 = performance.now();
        const r = record(i);
        insert.run(r.id, r.micros, r.at);
        latencies.push(performance.now() - t0);
    }
    db.close();
    results.push(summarize("node:sqlite, WAL, synchronous=FULL, one transaction per record", latencies, (performance.now() - started) / 1000));
}

rmSync(dir, { recursive: true, force: true });
console.log(`# Ledger storage: measured\n\n\`npm run bench:ledger\`, ${RECORDS} settlement records, each durable before it counts, on ${process.argv[2] ?? tmpdir()} (${process.platform}, Node ${process.version}).\n`);
console.log("| storage | records/s | p50 ms | p99 ms |\n| --- | ---: | ---: | ---: |");
for (const r of results) console.log(`| ${r.name} | ${r.perSecond.toFixed(0)} | ${r.p50.toFixed(3)} | ${r.p99.toFixed(3)} |`);
