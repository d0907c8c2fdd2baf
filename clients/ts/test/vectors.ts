/**
 * Reads the golden vectors out of docs/PROTOCOL.md: every packet or message
 * literal followed by its hex, inline (`[2, 7]` = `92 02 07`) or in a code
 * block (a literal line, then indented hex lines), and hex-only code blocks
 * after a "Golden (…)" paragraph (the Hello).
 */
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { Encoder } from "@msgpack/msgpack";

export interface Vector {
  /** Line number in PROTOCOL.md. */
  line: number;
  /** The literal as written, or undefined for a hex-only block. */
  literal: string | undefined;
  /** The literal parsed into a MessagePack-ready value. */
  value: unknown;
  /** The hex as written (may abbreviate a run as `cc…cc`). */
  hex: string;
}

/** docs/PROTOCOL.md of this repository, or $OSCLOUD_PROTOCOL_MD. */
export const PROTOCOL_MD = process.env.OSCLOUD_PROTOCOL_MD
  ? pathToFileURL(process.env.OSCLOUD_PROTOCOL_MD)
  : new URL("../../../../docs/PROTOCOL.md", import.meta.url);

export function readVectors(path: URL = PROTOCOL_MD): Vector[] {
  const text = readFileSync(path, "utf8");
  const lineOf = (index: number) => text.slice(0, index).split("\n").length;
  const out: Vector[] = [];
  // Inline: `[…]` = `hex`, possibly across a line break.
  for (const m of text.matchAll(/`(\[[^`]*\])`\s*=\s*`([0-9a-f ]+)`/g)) {
    out.push({ line: lineOf(m.index), literal: m[1], value: parseLiteral(m[1] as string), hex: (m[2] as string).trim() });
  }
  // Code blocks after a paragraph that says "Golden".
  for (const m of text.matchAll(/Golden[^\n]*(?:\n[^\n`]+)*\n\n```\n([\s\S]*?)```/g)) {
    const body = m[1] as string;
    const start = lineOf((m.index as number) + m[0].indexOf("```") ) + 1;
    const lines = body.split("\n");
    if (lines.every((l) => /^[0-9a-f ]*$/.test(l))) {
      out.push({ line: start, literal: undefined, value: undefined, hex: lines.join(" ") });
      continue;
    }
    let cur: { line: number; literal: string; hex: string[] } | undefined;
    const flush = () => {
      if (cur) out.push({ line: cur.line, literal: cur.literal, value: parseLiteral(cur.literal), hex: cur.hex.join(" ") });
    };
    lines.forEach((l, i) => {
      if (l.startsWith("[")) {
        flush();
        cur = { line: start + i, literal: withoutNote(l), hex: [] };
      } else if (l.trim() !== "" && cur) {
        cur.hex.push(l.trim());
      }
    });
    flush();
  }
  return out.sort((a, b) => a.line - b.line);
}

/** A block line's literal without the note after it: `[…]   (a zero credit, §8)`. */
function withoutNote(line: string): string {
  let depth = 0;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c === '"') i = line.indexOf('"', i + 1);
    else if (c === "[") depth++;
    else if (c === "]" && --depth === 0) {
      const rest = line.slice(i + 1).trim();
      if (rest !== "" && !/^\(.*\)$/.test(rest)) throw new Error(`unexpected text after a literal: ${rest}`);
      return line.slice(0, i + 1).trim();
    }
  }
  throw new Error(`unbalanced literal: ${line}`);
}

/** Hex without abbreviations to bytes. */
export function hexBytes(hex: string): Uint8Array {
  const t = hex.trim().split(/\s+/).filter((x) => x !== "");
  return Uint8Array.from(t, (x) => {
    if (!/^[0-9a-f]{2}$/.test(x)) throw new Error(`not a hex byte: ${x}`);
    return parseInt(x, 16);
  });
}

/** Hex, where `cc…cc` stands for a run of one or more `cc`, as a regular expression over lowercase hex. */
export function hexPattern(hex: string): RegExp {
  const parts = hex
    .trim()
    .split(/\s+/)
    .map((t) => {
      const run = /^([0-9a-f]{2})…\1$/.exec(t);
      if (run) return `(?:${run[1]})+`;
      if (!/^[0-9a-f]{2}$/.test(t)) throw new Error(`not a hex byte: ${t}`);
      return t;
    });
  return new RegExp(`^${parts.join("")}$`);
}

export function toHex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/**
 * Parses the literal notation of PROTOCOL.md: arrays, integers, "strings",
 * true/false/nil, {"k": "v"} maps, and `bin "text"`, `bin 00` (hex bytes),
 * `bin cc×16` (a byte repeated), `bin (str "hi")` (the MessagePack encoding
 * of the value in parentheses, as bin), `str "hi"` (a str).
 */
const msgpack = new Encoder();

export function parseLiteral(src: string): unknown {
  let i = 0;
  const ws = () => {
    while (i < src.length && /\s/.test(src[i] as string)) i++;
  };
  const expect = (c: string) => {
    ws();
    if (src[i] !== c) throw new Error(`expected ${c} at ${i} in ${src}`);
    i++;
  };
  const value = (): unknown => {
    ws();
    const c = src[i];
    if (c === "[") {
      i++;
      const a: unknown[] = [];
      ws();
      if (src[i] === "]") {
        i++;
        return a;
      }
      for (;;) {
        a.push(value());
        ws();
        if (src[i] === ",") {
          i++;
          continue;
        }
        expect("]");
        return a;
      }
    }
    if (c === "{") {
      i++;
      const o: Record<string, unknown> = {};
      ws();
      if (src[i] === "}") {
        i++;
        return o;
      }
      for (;;) {
        const k = value();
        if (typeof k !== "string") throw new Error("map key must be a string");
        expect(":");
        o[k] = value();
        ws();
        if (src[i] === ",") {
          i++;
          continue;
        }
        expect("}");
        return o;
      }
    }
    if (c === '"') {
      const end = src.indexOf('"', i + 1);
      const s = src.slice(i + 1, end);
      i = end + 1;
      return s;
    }
    const word = /^[A-Za-z0-9_x×]+/.exec(src.slice(i));
    if (!word) throw new Error(`unexpected ${c} at ${i} in ${src}`);
    const w = word[0];
    i += w.length;
    if (w === "true") return true;
    if (w === "false") return false;
    if (w === "nil") return null;
    if (w === "str") return value();
    if (w === "bin") {
      ws();
      if (src[i] === '"') return new TextEncoder().encode(value() as string);
      if (src[i] === "(") {
        i++;
        const inner = value();
        expect(")");
        return msgpack.encode(inner).slice();
      }
      const b = /^([0-9a-f]{2})(?:×(\d+))?((?:\s+[0-9a-f]{2})*)/.exec(src.slice(i));
      if (!b) throw new Error(`bad bin at ${i} in ${src}`);
      i += b[0].length;
      if (b[2]) return new Uint8Array(Number(b[2])).fill(parseInt(b[1] as string, 16));
      return hexBytes(`${b[1]}${b[3]}`);
    }
    if (/^\d+$/.test(w)) return Number(w);
    if (/^0x[0-9a-f]+$/i.test(w)) return Number(w);
    throw new Error(`unknown word ${w} in ${src}`);
  };
  const v = value();
  ws();
  if (i !== src.length) throw new Error(`trailing text in ${src}`);
  return v;
}
