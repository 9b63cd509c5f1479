/**
 * Characters that must never reach a page from a client-chosen string: C0/C1 controls, and the
 * bidirectional overrides and isolates that can reorder the text around them (so that a name could
 * visually swallow or reverse the page's own warning next to it).
 */
const BIDI = new Set([0x061C, 0x200E, 0x200F, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069])

export function hasUnsafeDisplayChars (value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i)
    if (c < 0x20 || (c >= 0x7F && c <= 0x9F) || BIDI.has(c)) return true
  }
  return false
}
