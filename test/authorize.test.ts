import t from 'tap'
import { s256 } from '../lib/oauth/pkce.js'
import { matchResource } from '../lib/oauth/resource.js'
import type { ResolvedResource } from '../lib/options/index.js'
import { buildApp, ISSUER } from './helpers/app.js'

const VERIFIER = 'dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk'
const CHALLENGE = s256(VERIFIER)
const CLIENT = { client_id: 'app-1', client_name: 'Test <App>', redirect_uris: ['https://app.example.com/cb', 'http://127.0.0.1:33418/callback'] }

function query (over: Record<string, string | string[] | undefined> = {}): string {
  const params = new URLSearchParams()
  const base: Record<string, string | string[] | undefined> = {
    response_type: 'code',
    client_id: CLIENT.client_id,
    redirect_uri: CLIENT.redirect_uris[0],
    code_challenge: CHALLENGE,
    code_challenge_method: 'S256',
    state: 'st-123',
    scope: 'mcp:tools',
    resource: 'https://auth.example.com/mcp',
    ...over
  }
  for (const [k, v] of Object.entries(base)) {
    if (v === undefined) continue
    for (const x of Array.isArray(v) ? v : [v]) params.append(k, x)
  }
  return `/oauth/authorize?${params}`
}

t.test('client and redirect errors are pages, never redirects', async t => {
  const { app } = await buildApp(t, { clients: [CLIENT] })
  const cases: Array<[string, string, RegExp]> = [
    ['no client_id', query({ client_id: undefined }), /no client_id/],
    ['unknown client', query({ client_id: 'nope' }), /not registered/],
    ['repeated client_id', query({ client_id: ['app-1', 'app-1'] }), /more than once/],
    ['unregistered redirect', query({ redirect_uri: 'https://evil.example.com/cb' }), /redirect_uri is not registered/],
    ['redirect with other path', query({ redirect_uri: 'https://app.example.com/cb/other' }), /redirect_uri is not registered/],
    ['loopback on another host', query({ redirect_uri: 'http://localhost:33418/callback' }), /redirect_uri is not registered/],
    ['repeated redirect', query({ redirect_uri: CLIENT.redirect_uris }), /more than once/],
    ['no redirect with two registered', query({ redirect_uri: undefined }), /no redirect_uri/]
  ]
  for (const [name, url, message] of cases) {
    const res = await app.inject(url)
    t.equal(res.statusCode, 400, name)
    t.notOk(res.headers.location, `${name}: no redirect`)
    t.match(res.headers['content-type'], /^text\/html/)
    t.match(res.body, message, name)
    t.match(res.headers['content-security-policy'], /frame-ancestors 'none'/)
  }
})

t.test('later errors redirect to the client with error, state and iss', async t => {
  const { app } = await buildApp(t, { clients: [CLIENT] })
  const cases: Array<[string, string, string]> = [
    ['no PKCE', query({ code_challenge: undefined, code_challenge_method: undefined }), 'invalid_request'],
    ['plain method', query({ code_challenge_method: 'plain' }), 'invalid_request'],
    ['no method', query({ code_challenge_method: undefined }), 'invalid_request'],
    ['malformed challenge', query({ code_challenge: 'short' }), 'invalid_request'],
    ['response_type token', query({ response_type: 'token' }), 'unsupported_response_type'],
    ['no response_type', query({ response_type: undefined }), 'invalid_request'],
    ['unknown scope', query({ scope: 'mcp:tools root' }), 'invalid_scope'],
    ['wrong resource', query({ resource: 'https://auth.example.com/other' }), 'invalid_target'],
    ['two resources', query({ resource: ['https://auth.example.com/mcp', 'https://auth.example.com/mcp'] }), 'invalid_target'],
    ['resource with fragment', query({ resource: 'https://auth.example.com/mcp#x' }), 'invalid_target'],
    ['repeated scope', query({ scope: ['a', 'b'] }), 'invalid_request']
  ]
  for (const [name, url, error] of cases) {
    const res = await app.inject(url)
    t.equal(res.statusCode, 302, name)
    const location = new URL(res.headers.location as string)
    t.equal(location.origin + location.pathname, 'https://app.example.com/cb', name)
    t.equal(location.searchParams.get('error'), error, name)
    t.ok(location.searchParams.get('error_description'), name)
    t.equal(location.searchParams.get('state'), 'st-123', `${name}: state`)
    t.equal(location.searchParams.get('iss'), ISSUER, `${name}: iss (RFC 9207)`)
  }
})

t.test('a valid request shows the consent page', async t => {
  const { app } = await buildApp(t, { clients: [CLIENT] })
  const res = await app.inject(query({ resource: 'HTTPS://AUTH.example.com/mcp/', scope: 'mcp:tools offline_access' }))
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^text\/html/)
  t.match(res.headers['content-security-policy'], /default-src 'none'/)
  t.match(res.headers['content-security-policy'], /frame-ancestors 'none'/)
  t.equal(res.headers['x-frame-options'], 'DENY')
  t.equal(res.headers['cache-control'], 'no-store')
  t.match(res.body, 'Test &#60;App&#62;', 'client name escaped')
  t.notMatch(res.body, '<App>')
  t.match(res.body, 'app.example.com', 'redirect host shown')
  t.match(res.body, '<code>mcp:tools</code>')
  t.notMatch(res.body, 'offline_access', 'ignored scope not shown')
  t.notMatch(res.body, 'loopback address', 'no loopback warning: one redirect is https')
  t.notMatch(res.body, '<script', 'works without JavaScript')
  const cookie = String(res.headers['set-cookie'])
  t.match(cookie, /__Host-mcp-oauth-csrf=/, '__Host- prefix on an https issuer')
  t.match(cookie, /Secure/)
  t.match(cookie, /HttpOnly/)
  t.match(cookie, /SameSite=Lax/)
})

t.test('loopback-only client: the page warns; any loopback port matches', async t => {
  const { app } = await buildApp(t, { clients: [{ client_id: 'cli', redirect_uris: ['http://127.0.0.1/callback'] }] })
  const res = await app.inject(query({ client_id: 'cli', redirect_uri: 'http://127.0.0.1:51234/callback' }))
  t.equal(res.statusCode, 200)
  t.match(res.body, 'loopback address')
})

t.test('resource defaults to the single protected resource; scope to the defaults', async t => {
  const { app } = await buildApp(t, { clients: [CLIENT] })
  const res = await app.inject(query({ resource: undefined, scope: undefined }))
  t.equal(res.statusCode, 200)
  t.match(res.body, '<code>https://auth.example.com/mcp</code>')
  t.match(res.body, '<code>mcp:tools</code>')
  t.notMatch(res.body, 'mcp:admin')
})

t.test('matchResource: the configured spelling, equivalent spellings, and what names none', async t => {
  const make = (resource: string): ResolvedResource => ({ resource, scopes: [], metadataPath: '/m', metadataUrl: 'https://x/m' }) as ResolvedResource
  const mcp = make('https://auth.example.com/mcp')
  const other = make('https://auth.example.com/other/')
  const resources = [mcp, other]
  t.equal(matchResource('https://auth.example.com/mcp', resources), mcp, 'as configured')
  t.equal(matchResource('HTTPS://Auth.Example.com:443/mcp/', resources), mcp, 'scheme and host case, default port, trailing slash')
  t.equal(matchResource('https://auth.example.com/other', resources), other, 'a configured trailing slash')
  t.equal(matchResource('https://auth.example.com/other/', resources), other)
  t.equal(matchResource('https://auth.example.com/mcp#frag', resources), null, 'a fragment names nothing')
  t.equal(matchResource('https://auth.example.com/mcp?x=1', resources), null, 'a query is part of the name')
  t.equal(matchResource('not a url', resources), null)
  t.equal(matchResource('', resources), null)
  // Asked again: the same answers from the cached forms of the configured resources.
  t.equal(matchResource('HTTPS://AUTH.EXAMPLE.COM/mcp', resources), mcp)
  t.equal(matchResource('https://auth.example.com:8443/mcp', resources), null, 'another port is another resource')
})
