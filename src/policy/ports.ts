/** Port ranges as the policy map stores them: power-of-two aligned blocks with a prefix length. */

export interface PortBlock {
  port: number;
  /** Bits of the 16-bit port that must match: 16 for one port, 0 for every port. */
  prefixLen: number;
}

/** Splits [from, to] into the fewest aligned blocks, as Cilium does for its LPM policy map. */
export function portBlocks(from: number, to: number): PortBlock[] {
  if (from < 0 || to > 65535 || from > to) throw new RangeError(`bad port range ${from}-${to}`);
  const out: PortBlock[] = [];
  let p = from;
  while (p <= to) {
    // The largest block starting at p that is aligned and stays within the range.
    let size = 1;
    while (size < 65536 && p % (size * 2) === 0 && p + size * 2 - 1 <= to) size *= 2;
    out.push({ port: p, prefixLen: 16 - Math.log2(size) });
    p += size;
  }
  return out;
}

/** Whether a concrete port falls in a block. */
export function blockContains(b: PortBlock, port: number): boolean {
  if (b.prefixLen === 0) return true;
  const shift = 16 - b.prefixLen;
  return port >> shift === b.port >> shift;
}
