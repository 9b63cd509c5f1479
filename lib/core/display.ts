/**
 * Characters that must never reach a page from a client-chosen string: C0/C1 controls, and the
 * bidirectional overrides and isolates that can reorder the text around them (so that a name could
 * visually swallow or reverse the page's own warning next to it).
 */
const UNSAFE = /[\u0000-\u001F\u007F-\u009F\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]/u

export function hasUnsafeDisplayChars (value: string): boolean {
  return UNSAFE.test(value)
}
