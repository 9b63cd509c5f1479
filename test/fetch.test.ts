import t from 'tap'
import { createServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { errors } from '../lib/errors.js'
import { SafeFetcher, type SafeFetchOptions } from '../lib/security/fetch.js'
import { selfSignedCert } from './helpers/tls.js'

// The fetcher on its own (test/cimd.test.ts drives it through metadata documents): its contract for
// any caller, such as a JWKS fetch with its own media type.
const { cert, key } = selfSignedCert(t, ['keys.test'])
const server = createServer({ key, cert }, (req, res) => {
  if (req.url === '/jwks') res.writeHead(200, { 'content-type': 'application/jwk-set+json' }).end('{"keys":[]}')
  else if (req.url === '/hang') res.writeHead(200, { 'content-type': 'application/jwk-set+json' }).write('{')
  else res.writeHead(404).end()
})
await new Promise<void>(resolve => server.listen(0, '127.0.0.1', () => resolve()))
t.teardown(() => {
  server.closeAllConnections()
  server.close()
})
const base = `https://keys.test:${(server.address() as AddressInfo).port}`

function fetcher (opts: Partial<SafeFetchOptions> = {}): SafeFetcher {
  return new SafeFetcher({
    timeoutMs: 3000,
    maxBytes: 1024,
    mediaType: 'application/jwk-set+json',
    userAgent: 'test',
    allowPrivateAddresses: true,
    lookup: async () => [{ address: '127.0.0.1', family: 4 }],
    ca: cert,
    ...opts
  })
}

t.test('a document of the asked media type comes back with its headers', async t => {
  const fetched = await fetcher().get(new URL(`${base}/jwks`))
  t.equal(fetched.body.toString(), '{"keys":[]}')
  t.equal(fetched.headers['content-type'], 'application/jwk-set+json')
})

t.test('refusals are FETCH_FAILED errors whose message is the reason', async t => {
  const refused = { code: 'FST_MCP_OAUTH_FETCH_FAILED' }
  await t.rejects(fetcher().get(new URL(`${base}/missing`)), { ...refused, message: 'the server answered HTTP 404; 200 is required' })
  await t.rejects(fetcher({ mediaType: 'application/json' }).get(new URL(`${base}/jwks`)), { ...refused, message: 'the Content-Type must be application/json' })
  const err = await fetcher().get(new URL(`http://keys.test:${(server.address() as AddressInfo).port}/jwks`)).catch((e: unknown) => e)
  t.ok(err instanceof errors.FETCH_FAILED)
  t.match(err, { message: 'the URL must use https' })
  await t.rejects(fetcher({ allowPrivateAddresses: false }).get(new URL(`${base}/jwks`)), { ...refused, message: /private, loopback/ })
})

t.test('the caller\'s signal aborts a fetch with its own reason', async t => {
  const controller = new AbortController()
  const pending = fetcher().get(new URL(`${base}/hang`), controller.signal)
  setTimeout(() => controller.abort(new Error('shutting down')), 50)
  await t.rejects(pending, { message: 'shutting down' })
  await t.rejects(fetcher().get(new URL(`${base}/jwks`), controller.signal), { message: 'shutting down' }, 'already aborted')
})
