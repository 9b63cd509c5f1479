/**
 * The enterprise IdP of the jwt-bearer benchmark, in the runner's process: an ES256 key pair whose
 * public half a loopback server publishes (the plugin fetches it once and caches it), and ID-JAGs
 * signed with the private half; and the private_key_jwt machine client's key pair (its public key
 * given to both servers at start) and client assertions signed with it. Pools are signed before each
 * timed run, so the signing costs the runner's time, never the measured server's.
 */
import { randomBytes } from 'node:crypto'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { exportJWK, generateKeyPair, SignJWT } from 'jose'
import { TOKEN_BENCH } from './protocol.js'

export interface BenchIdp {
  issuer: string
  jwksUri: string
  /** `n` ID-JAGs for the machine client, each with its own jti and user, valid for five minutes. */
  sign (n: number): Promise<string[]>
  /** The public key of the private_key_jwt machine client (TOKEN_BENCH.machineJwt), as a JWK. */
  machineKey: Record<string, unknown>
  /** `n` client assertions (RFC 7523 §2.2) of that client for `audience`, each with its own jti. */
  signClientAssertions (n: number, audience: string): Promise<string[]>
  close (): Promise<void>
}

export async function startIdp (): Promise<BenchIdp> {
  const { privateKey, publicKey } = await generateKeyPair('ES256')
  const jwks = JSON.stringify({ keys: [{ ...await exportJWK(publicKey), kid: 'bench-idp', alg: 'ES256', use: 'sig' }] })
  // The private_key_jwt machine client's own key pair (a client's key is not its IdP's).
  const machine = await generateKeyPair('ES256')
  const machineKey = { ...await exportJWK(machine.publicKey), kid: 'bench-machine-jwt', alg: 'ES256', use: 'sig' }
  const server = createServer((request, response) => {
    if (request.url === '/jwks') response.writeHead(200, { 'content-type': 'application/json' }).end(jwks)
    else response.writeHead(404).end()
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  // jti values unique across the runs of one benchmark (the server remembers every one it spent).
  const prefix = randomBytes(6).toString('base64url')
  let counter = 0
  return {
    issuer: `${origin}/idp`,
    jwksUri: `${origin}/jwks`,
    async sign (n) {
      const iat = Math.floor(Date.now() / 1000)
      const header = { alg: 'ES256', typ: 'oauth-id-jag+jwt', kid: 'bench-idp' }
      const items: string[] = []
      for (let i = 0; i < n; i++) {
        const id = ++counter
        items.push(await new SignJWT({
          client_id: TOKEN_BENCH.machine.clientId,
          resource: TOKEN_BENCH.resource,
          scope: TOKEN_BENCH.scope,
          jti: `${prefix}-${id}`
        }).setProtectedHeader(header).setIssuer(`${origin}/idp`).setSubject(`bench-user-${id}`)
          .setAudience(TOKEN_BENCH.issuer).setIssuedAt(iat).setExpirationTime(iat + 300).sign(privateKey))
      }
      return items
    },
    machineKey,
    async signClientAssertions (n, audience) {
      const iat = Math.floor(Date.now() / 1000)
      const client = TOKEN_BENCH.machineJwt.clientId
      const items: string[] = []
      for (let i = 0; i < n; i++) {
        items.push(await new SignJWT({ jti: `${prefix}-c${++counter}` }).setProtectedHeader({ alg: 'ES256', kid: 'bench-machine-jwt' })
          .setIssuer(client).setSubject(client).setAudience(audience).setIssuedAt(iat).setExpirationTime(iat + 300).sign(machine.privateKey))
      }
      return items
    },
    close: () => new Promise<void>(resolve => { server.close(() => { resolve() }) })
  }
}
