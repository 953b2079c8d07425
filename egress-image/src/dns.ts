// The DNS sink: agents' resolver. Every query gets REFUSED and is logged; agents need no DNS of their own,
// since the gateway resolves for them. Hand-rolled to the little it needs: read the question, echo it back.
import dgram from "node:dgram";
import { once } from "node:events";
import net from "node:net";

export const RCODE_REFUSED = 5;

export interface DnsQuestion {
    id: number;
    name: string;
    type: number;
    /** Bytes of the header plus the first question, to echo in the answer. */
    questionEnd: number;
}

/** Parses a query's header and first question; undefined for anything malformed or not a query. */
export function parseQuery(packet: Buffer): DnsQuestion | undefined {
    if (packet.length < 12 || packet.length > 4096) return undefined;
    const flags = packet.readUInt16BE(2);
    if (flags & 0x8000) return undefined; // a response, not a query
    if (packet.readUInt16BE(4) < 1) return undefined;
    const labels: string[] = [];
    let offset = 12;
    for (;;) {
        if (offset >= packet.length) return undefined;
        const length = packet[offset];
        if (length === 0) break;
        if (length > 63) return undefined; // compression pointers have no place in a question
        offset += 1;
        if (offset + length > packet.length) return undefined;
        labels.push(packet.subarray(offset, offset + length).toString("latin1"));
        offset += length;
        if (labels.join(".").length > 253) return undefined;
    }
    offset += 1;
    if (offset + 4 > packet.length) return undefined;
    return { id: packet.readUInt16BE(0), name: labels.join("."), type: packet.readUInt16BE(offset), questionEnd: offset + 4 };
}

/** REFUSED, with the query's id, opcode, RD bit and question echoed and no records. */
export function refusal(query: Buffer, question: DnsQuestion): Buffer {
    const answer = Buffer.from(query.subarray(0, question.questionEnd));
    const opcodeAndRd = query.readUInt16BE(2) & 0x7900;
    answer.writeUInt16BE(0x8000 | opcodeAndRd | RCODE_REFUSED, 2);
    answer.writeUInt16BE(1, 4); // one question
    answer.writeUInt32BE(0, 6); // no answer or authority records
    answer.writeUInt16BE(0, 10); // no additional records
    return answer;
}

export interface DnsSink {
    udp: dgram.Socket;
    tcp: net.Server;
    close(): Promise<void>;
}

/** Serves REFUSED on UDP and TCP. `onQuery` hears of every query (for logs and metrics). */
export async function startDnsSink(host: string, port: number, onQuery: (source: string, question: DnsQuestion | undefined) => void): Promise<DnsSink> {
    const udp = dgram.createSocket({ type: net.isIPv6(host) ? "udp6" : "udp4" });
    udp.on("message", (packet, remote) => {
        const question = parseQuery(packet);
        onQuery(remote.address, question);
        if (question) udp.send(refusal(packet, question), remote.port, remote.address);
    });
    udp.bind(port, host);
    await once(udp, "listening");

    const tcp = net.createServer((socket) => {
        socket.setTimeout(5000, () => socket.destroy());
        let buffered = Buffer.alloc(0);
        socket.on("data", (chunk: Buffer) => {
            buffered = Buffer.concat([buffered, chunk]);
            while (buffered.length >= 2) {
                const length = buffered.readUInt16BE(0);
                if (buffered.length < 2 + length) {
                    if (buffered.length > 4098) socket.destroy();
                    return;
                }
                const packet = buffered.subarray(2, 2 + length);
                buffered = buffered.subarray(2 + length);
                const question = parseQuery(packet);
                onQuery(socket.remoteAddress ?? "", question);
                if (!question) return void socket.destroy();
                const answer = refusal(packet, question);
                const framed = Buffer.alloc(2 + answer.length);
                framed.writeUInt16BE(answer.length, 0);
                answer.copy(framed, 2);
                socket.write(framed);
            }
        });
        socket.on("error", () => socket.destroy());
    });
    // Same port as UDP, also when port 0 let the system choose: then that port may be taken for TCP, and the
    // pair is chosen again.
    tcp.listen(udp.address().port, host);
    try {
        await once(tcp, "listening");
    } catch (error) {
        udp.close();
        if (port === 0 && (error as NodeJS.ErrnoException).code === "EADDRINUSE") return startDnsSink(host, port, onQuery);
        throw error;
    }
    return {
        udp,
        tcp,
        close: async () => {
            udp.close();
            await new Promise((resolve) => tcp.close(resolve));
        },
    };
}
