// Generates tests/vectors/es6_numbers_v8.txt: `<IEEE 754 bits in hex> <Number.prototype.toString>`
// per line, as printed by V8, the reference RFC 8785 number serialisation follows.
// Regenerate with: node tests/vectors/es6_numbers_v8.js 4000 20240611 > tests/vectors/es6_numbers_v8.txt
// A quarter each: random bit patterns; exact ties (16-digit integers plus .25 or .75, where the
// shortest 17 digits tie and ES6 takes the even one); integers from 2^53 to 2^70; decimals.
const N = parseInt(process.argv[2]); let s = BigInt(process.argv[3]);
const buf = new ArrayBuffer(8); const dv = new DataView(buf);
function next() { s ^= (s << 13n) & 0xFFFFFFFFFFFFFFFFn; s ^= s >> 7n; s ^= (s << 17n) & 0xFFFFFFFFFFFFFFFFn; return s; }
const out = [];
function emit(bits) { dv.setBigUint64(0, bits); const f = dv.getFloat64(0); if (!isFinite(f)) return; out.push(bits.toString(16).padStart(16, '0') + ' ' + f.toString()); }
for (let i = 0; i < N; i++) {
  const r = next();
  const kind = Number(r & 3n);
  if (kind === 0) emit(r);
  else if (kind === 1) { // ties: integer part 16 digits, .25 / .75
    const m = 1000000000000000 + Number((r >> 4n) % 3503599627370496n);
    const f = m + ((r >> 2n) & 1n ? 0.25 : 0.75);
    dv.setFloat64(0, f); emit(dv.getBigUint64(0));
  } else if (kind === 2) { // large integers around 2^53..2^70
    const e = 53n + (r >> 8n) % 18n; const f = Number((r >> 20n) % (1n << 53n)) * Math.pow(2, Number(e - 53n));
    dv.setFloat64(0, f); emit(dv.getBigUint64(0));
  } else { // decimal-ish values
    const f = Number((r >> 3n) % 100000000n) / Math.pow(10, Number((r >> 40n) % 30n));
    dv.setFloat64(0, (r & 4n) ? -f : f); emit(dv.getBigUint64(0));
  }
}
process.stdout.write(out.join('\n') + '\n');
