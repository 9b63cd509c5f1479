import t from 'tap'
import Fastify from 'fastify'
import { mcpOAuth } from '../lib/index.js'
import { buildApp, ISSUER, RESOURCE } from './helpers/app.js'

t.test('RFC 8414 authorization server metadata', async t => {
  const { app } = await buildApp(t)
  const res = await app.inject('/.well-known/oauth-authorization-server')
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^application\/json/)
  t.equal(res.headers['cache-control'], 'public, max-age=300')
  const body = res.json()
  t.same(body, {
    issuer: ISSUER,
    authorization_endpoint: `${ISSUER}/oauth/authorize`,
    token_endpoint: `${ISSUER}/oauth/token`,
    scopes_supported: ['mcp:tools', 'mcp:admin'],
    response_types_supported: ['code'],
    response_modes_supported: ['query'],
    grant_types_supported: ['authorization_code', 'refresh_token', 'client_credentials'],
    token_endpoint_auth_methods_supported: ['none', 'client_secret_basic', 'client_secret_post'],
    revocation_endpoint: `${ISSUER}/oauth/revoke`,
    revocation_endpoint_auth_methods_supported: ['none', 'client_secret_basic', 'client_secret_post'],
    introspection_endpoint: `${ISSUER}/oauth/introspect`,
    introspection_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
    code_challenge_methods_supported: ['S256'],
    authorization_response_iss_parameter_supported: true,
    client_id_metadata_document_supported: true
  })
  t.notOk('registration_endpoint' in body, 'endpoints that are not enabled are not listed')
})

t.test('an issuer with a path: path-inserted metadata, and the root form for lax clients', async t => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(mcpOAuth, { issuer: 'https://host.example.com/tenant-a', resources: ['https://host.example.com/mcp'] })
  for (const url of ['/.well-known/oauth-authorization-server/tenant-a', '/.well-known/oauth-authorization-server']) {
    const res = await app.inject(url)
    t.equal(res.statusCode, 200, url)
    t.equal(res.json().issuer, 'https://host.example.com/tenant-a', 'issuer exactly as configured')
    t.equal(res.json().token_endpoint, 'https://host.example.com/tenant-a/oauth/token')
  }
  t.equal((await app.inject('/tenant-a/.well-known/oauth-authorization-server')).statusCode, 404)
})

t.test('RFC 9728 protected resource metadata at both paths', async t => {
  const { app } = await buildApp(t)
  for (const url of ['/.well-known/oauth-protected-resource/mcp', '/.well-known/oauth-protected-resource']) {
    const res = await app.inject(url)
    t.equal(res.statusCode, 200, url)
    t.same(res.json(), {
      resource: RESOURCE,
      authorization_servers: [ISSUER],
      scopes_supported: ['mcp:tools', 'mcp:admin'],
      bearer_methods_supported: ['header']
    })
  }
})

t.test('several resources: each has its own document; the root answers for the first', async t => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(mcpOAuth, {
    issuer: 'https://h.example.com',
    scopes: ['a', 'b'],
    resources: [
      { resource: 'https://h.example.com/mcp', name: 'Main', scopes: ['a'], documentation: 'https://h.example.com/docs' },
      { resource: 'https://h.example.com/tenants/x/mcp', scopes: ['b'] }
    ]
  })
  const main = (await app.inject('/.well-known/oauth-protected-resource/mcp')).json()
  t.same(main, {
    resource: 'https://h.example.com/mcp',
    authorization_servers: ['https://h.example.com'],
    scopes_supported: ['a'],
    bearer_methods_supported: ['header'],
    resource_name: 'Main',
    resource_documentation: 'https://h.example.com/docs'
  })
  t.equal((await app.inject('/.well-known/oauth-protected-resource/tenants/x/mcp')).json().resource, 'https://h.example.com/tenants/x/mcp')
  t.equal((await app.inject('/.well-known/oauth-protected-resource')).json().resource, 'https://h.example.com/mcp')
  t.throws(() => app.mcpOAuth.authenticate(), { code: 'FST_MCP_OAUTH_INVALID_GUARD' }, 'must say which resource')
  t.throws(() => app.mcpOAuth.authenticate({ resource: 'https://h.example.com/other' }), { code: 'FST_MCP_OAUTH_INVALID_GUARD' })
  t.throws(() => app.mcpOAuth.authenticate({ resource: 'not a url' }), { code: 'FST_MCP_OAUTH_INVALID_GUARD' })
  t.throws(() => app.mcpOAuth.authenticate({ resource: 'https://h.example.com/mcp', scopes: ['zzz'] }), { code: 'FST_MCP_OAUTH_INVALID_GUARD' })
  t.type(app.mcpOAuth.authenticate({ resource: 'https://H.example.com/mcp' }), 'function', 'resource matched in canonical form')
})

t.test('a resource at the origin root', async t => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(mcpOAuth, { issuer: 'https://h.example.com', resources: ['https://h.example.com'] })
  const res = await app.inject('/.well-known/oauth-protected-resource')
  t.equal(res.json().resource, 'https://h.example.com/')
})
