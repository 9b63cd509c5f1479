import { isIP } from 'node:net'

/**
 * Special-use addresses, one module for the redirect policy (no redirect to a private host) and the
 * SSRF-safe fetch (no connection to a private address).
 */

/**
 * Private, loopback, link-local, unique-local, CGNAT and other special-use addresses (IPv4 and
 * IPv6, IPv4-mapped included), plus names that only resolve locally.
 */
export function isPrivateHost (hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '').toLowerCase()
  if (host === 'localhost' || host.endsWith('.localhost') || host.endsWith('.local') || host.endsWith('.internal')) return true
  return isIP(host) !== 0 && isForbiddenAddress(host)
}

export function isSpecialIPv4 (ip: string): boolean {
  const parts = ip.split('.').map(Number)
  const [a, b] = parts as [number, number, number, number]
  return a === 0 || a === 10 || a === 127 || a >= 224 ||
    (a === 100 && b >= 64 && b <= 127) ||
    (a === 169 && b === 254) ||
    (a === 172 && b >= 16 && b <= 31) ||
    (a === 192 && b === 168) ||
    (a === 192 && b === 0 && (parts[2] === 0 || parts[2] === 2)) ||
    (a === 198 && (b === 18 || b === 19)) ||
    (a === 198 && b === 51 && parts[2] === 100) ||
    (a === 203 && b === 0 && parts[2] === 113)
}

export function isSpecialIPv6 (ip: string): boolean {
  const h = ip.toLowerCase()
  if (h === '::' || h === '::1') return true
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(h)
  if (mapped !== null) return isSpecialIPv4(mapped[1] as string)
  if (/^::ffff:[0-9a-f]{1,4}:[0-9a-f]{1,4}$/.test(h)) {
    const [hi, lo] = h.slice(7).split(':').map(x => parseInt(x as string, 16)) as [number, number]
    return isSpecialIPv4(`${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`)
  }
  const first = parseInt(h.split(':')[0] || '0', 16)
  return (first & 0xfe00) === 0xfc00 || // fc00::/7 unique local
    (first & 0xffc0) === 0xfe80 || // fe80::/10 link-local
    (first & 0xffc0) === 0xfec0 || // fec0::/10 site-local (deprecated)
    (first & 0xff00) === 0xff00 || // multicast
    h.startsWith('64:ff9b:') || // NAT64
    h.startsWith('2001:db8:') || // documentation
    h.startsWith('2001:0:') || h.startsWith('2002:') // Teredo, 6to4
}

/**
 * An address no redirect may point at and the metadata fetcher never connects to. Builds on the
 * prefix checks below and also catches IPv6 spellings that prefix tests miss (uncompressed zeros,
 * IPv4-compatible and IPv4-translated forms, zone ids) and a few more special-use blocks.
 */
export function isForbiddenAddress (address: string): boolean {
  const family = isIP(address)
  if (family === 4) return isSpecialIPv4(address)
  if (family !== 6 || address.includes('%')) return true
  if (isSpecialIPv6(address)) return true
  const [h0, h1, h2, h3, h4, h5, h6, h7] = ipv6Groups(address) as [number, number, number, number, number, number, number, number]
  if (h0 === 0 && h1 === 0 && h2 === 0 && h3 === 0 && h4 === 0 && h5 === 0xffff) {
    return isSpecialIPv4(`${h6 >> 8}.${h6 & 255}.${h7 >> 8}.${h7 & 255}`) // IPv4-mapped
  }
  return h0 < 0x0100 || // ::/8: unspecified, loopback, IPv4-compatible, IPv4-translated
    (h0 === 0x0100 && h1 === 0 && h2 === 0 && h3 === 0) || // 100::/64 discard
    (h0 === 0x0064 && h1 === 0xff9b) || // NAT64
    (h0 === 0x2001 && h1 < 0x0200) || // 2001::/23 IETF protocol assignments (Teredo, ORCHID, ...)
    (h0 === 0x2001 && h1 === 0x0db8) || // documentation
    (h0 === 0x3fff && h1 < 0x1000) || // 3fff::/20 documentation
    h0 === 0x2002 || // 6to4
    (h0 & 0xfe00) === 0xfc00 || (h0 & 0xffc0) === 0xfe80 || (h0 & 0xffc0) === 0xfec0 || (h0 & 0xff00) === 0xff00
}

/** The eight 16-bit groups of an address that isIP() accepted as IPv6 (no zone id). */
function ipv6Groups (address: string): number[] {
  let text = address.toLowerCase()
  const tail: number[] = []
  const dotted = /^(.*:)(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text)
  if (dotted !== null) {
    const [a, b, c, d] = dotted.slice(2).map(Number) as [number, number, number, number]
    tail.push((a << 8) | b, (c << 8) | d)
    const prefix = dotted[1] as string
    text = prefix.endsWith('::') ? prefix : prefix.slice(0, -1)
  }
  const [head = '', rear] = text.split('::')
  const parse = (part: string): number[] => part === '' ? [] : part.split(':').map(g => parseInt(g, 16))
  const front = parse(head)
  const back = rear === undefined ? [] : parse(rear)
  return [...front, ...new Array<number>(8 - tail.length - front.length - back.length).fill(0), ...back, ...tail]
}
