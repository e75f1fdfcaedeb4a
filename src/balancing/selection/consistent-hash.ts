import { hash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import type { Accept, Peer, Selector } from './peer.js';

/** Ring points per unit of weight (as nginx's and Pingora's Ketama rings: 160). */
export const POINTS_PER_WEIGHT = 160;

/**
 * Consistent hashing on a Ketama ring: each peer owns `weight × 160` points, four from each MD5 digest of
 * `address-N` (as libketama; CRC-32 is linear, so its points for similar addresses cluster and the ring
 * comes out lopsided); a key goes to the owner of the first point at or after the key's CRC-32. Adding or removing
 * one of N peers moves only about 1/N of the keys, and the ring depends only on addresses and weights, so
 * a key maps to the same backend across restarts. Unacceptable owners are skipped clockwise.
 */
export function createConsistentHash<P extends Peer>(peers: readonly P[]): Selector<P> {
  const points: { hash: number; owner: number }[] = [];
  peers.forEach((peer, owner) => {
    for (let i = 0; i < (peer.weight * POINTS_PER_WEIGHT) / 4; i++) {
      const digest = hash('md5', `${peer.address}-${i}`, 'buffer');
      for (let k = 0; k < 4; k++) points.push({ hash: digest.readUInt32LE(k * 4), owner });
    }
  });
  points.sort((a, b) => a.hash - b.hash || a.owner - b.owner);
  const hashes = Uint32Array.from(points, (p) => p.hash);
  const owners = Uint16Array.from(points, (p) => p.owner);

  return {
    select: function selectConsistentHash(accept: Accept<P>, key: string): P | undefined {
      if (hashes.length === 0) return undefined;
      const h = crc32(key);
      let lo = 0;
      let hi = hashes.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if ((hashes[mid] as number) < h) lo = mid + 1;
        else hi = mid;
      }
      for (let n = 0; n < hashes.length; n++) {
        const peer = peers[owners[(lo + n) % hashes.length] as number] as P;
        if (accept(peer)) return peer;
      }
      return undefined;
    },
  };
}
