import t from 'tap'
import Fastify from 'fastify'
import { exportJWK, generateKeyPair } from 'jose'
import { Client, ClientCredentialsProvider, PrivateKeyJwtProvider, StreamableHTTPClientTransport, type OAuthClientProvider } from '@modelcontextprotocol/client'
import { mcpOAuth } from '../lib/index.js'
import { mcpRoutes } from '../example/mcp.js'
import { freePort } from './helpers/login.js'

/*
 * Machine clients end to end with the MCP TypeScript client 2.x: ClientCredentialsProvider (a
 * client secret) and PrivateKeyJwtProvider (a signed client assertion) against a loopback Fastify
 * server with this plugin and the example's MCP endpoint. The client discovers the authorization
 * server from the 401, takes a client_credentials token and calls `whoami`, which must see the
 * client itself as the subject.
 */

const SECRET = 'machine-secret-of-enough-length'
const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true })
const publicJwk = { ...await exportJWK(publicKey), kid: 'machine-key-1', alg: 'ES256', use: 'sig' }
const privateJwk = { ...await exportJWK(privateKey), kid: 'machine-key-1', alg: 'ES256' }

const port = await freePort()
const issuer = `http://127.0.0.1:${port}`
const app = Fastify({ logger: false })
await app.register(mcpOAuth, {
  issuer,
  resources: [`${issuer}/mcp`],
  scopes: ['mcp:tools'],
  clientIdMetadataDocuments: { enabled: false },
  clients: [
    { client_id: 'machine-secret', client_secret: SECRET, grant_types: ['client_credentials'] },
    { client_id: 'machine-key', token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [publicJwk] }, grant_types: ['client_credentials'] }
  ]
})
await app.register(mcpRoutes)
await app.listen({ port, host: '127.0.0.1' })
t.teardown(() => app.close())

async function whoami (provider: OAuthClientProvider): Promise<Record<string, unknown>> {
  const client = new Client({ name: 'machine-e2e', version: '1.0.0' })
  const transport = new StreamableHTTPClientTransport(new URL(`${issuer}/mcp`), { authProvider: provider })
  await client.connect(transport)
  try {
    const result = await client.callTool({ name: 'whoami', arguments: {} })
    return result.structuredContent as Record<string, unknown>
  } finally {
    await client.close()
  }
}

t.test('ClientCredentialsProvider (client_secret_basic): whoami sees the client as the subject', async t => {
  const provider = new ClientCredentialsProvider({ clientId: 'machine-secret', clientSecret: SECRET, expectedIssuer: issuer })
  const me = await whoami(provider)
  t.match(me, { subjectType: 'client', userId: 'machine-secret', clientId: 'machine-secret', resource: `${issuer}/mcp` })
  t.notOk(provider.tokens()?.refresh_token, 'no refresh token for a machine client')
})

t.test('PrivateKeyJwtProvider (private_key_jwt): whoami sees the client as the subject', async t => {
  const provider = new PrivateKeyJwtProvider({ clientId: 'machine-key', privateKey: privateJwk, algorithm: 'ES256', expectedIssuer: issuer })
  const me = await whoami(provider)
  t.match(me, { subjectType: 'client', userId: 'machine-key', clientId: 'machine-key', resource: `${issuer}/mcp` })
})

t.test('PrivateKeyJwtProvider with a key the server does not know: no token, no tool call', async t => {
  const other = await generateKeyPair('ES256', { extractable: true })
  const provider = new PrivateKeyJwtProvider({
    clientId: 'machine-key',
    privateKey: { ...await exportJWK(other.privateKey), kid: 'machine-key-1', alg: 'ES256' },
    algorithm: 'ES256',
    expectedIssuer: issuer
  })
  await t.rejects(whoami(provider), /signature does not verify/)
  t.equal(provider.tokens(), undefined)
})
