// Postgres text-format values to JSON, by type OID: numbers where JSON can hold them exactly, parsed JSON
// for json/jsonb, strings for everything else (int8 and numeric stay strings to keep their precision).
const INT = new Set([21, 23, 26]); // int2, int4, oid
const FLOAT = new Set([700, 701]); // float4, float8
const JSONISH = new Set([114, 3802]); // json, jsonb

export function fromText(v: string | null, oid: number): unknown {
  if (v === null) return null;
  if (INT.has(oid)) return Number(v);
  if (FLOAT.has(oid)) return v === "NaN" || v === "Infinity" || v === "-Infinity" ? v : Number(v);
  if (oid === 16) return v === "t";
  if (JSONISH.has(oid)) return JSON.parse(v);
  return v;
}
