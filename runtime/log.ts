/** One JSON object per line on stdout. Callers pass only fields that are safe to print: never keys or tokens. */
export type LogFields = Record<string, string | number | boolean | null | undefined>;

export type LogSink = (line: string) => void;

export function jsonLogger(service: string, sink: LogSink = (line) => process.stdout.write(line)) {
    return (event: string, fields: LogFields = {}) => {
        sink(`${JSON.stringify({ ts: new Date().toISOString(), service, event, ...fields })}\n`);
    };
}

export type Logger = ReturnType<typeof jsonLogger>;
