import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/**
 * A fresh self-signed certificate (P-256) for the given DNS names, made with the openssl CLI in a
 * temporary folder that is removed at teardown. Pass `cert` as the trusted CA to the client side.
 */
export function selfSignedCert (t: { teardown (fn: () => unknown): void }, names: string[]): { cert: Buffer, key: Buffer } {
  const dir = mkdtempSync(join(tmpdir(), 'tls-test-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '2',
    '-subj', `/CN=${names[0] ?? 'localhost'}`, '-addext', `subjectAltName=${names.map(n => `DNS:${n}`).join(',')}`
  ], { stdio: 'ignore', timeout: 30_000 })
  return { cert: readFileSync(join(dir, 'cert.pem')), key: readFileSync(join(dir, 'key.pem')) }
}
