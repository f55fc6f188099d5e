// An OpenID provider that was not written for this project (panva's oidc-provider),
// configured the way JTL's Zitadel serves a Cloud App, for tests/oidc_interop.rs:
//
// - token endpoint `{issuer}/oauth/v2/token`, key set `{issuer}/oauth/v2/keys`, discovery at
//   `{issuer}/.well-known/openid-configuration`;
// - service clients: client credentials, `client_secret_basic` only, and (as Zitadel)
//   `scope=openid` required; their access tokens are opaque;
// - app tokens: RS256 JWT access tokens with a `kid`, `aud` = the app id, issued by the
//   provider's own client-credentials grant for an "app shell" client whose client id is a
//   numeric user id (so `sub` is one, as in Zitadel), with a resource indicator
//   `urn:jtl:app:<app id>` naming the app; the provider's `extraTokenClaims` hook adds
//   `urn:jtl:tenant_id` and `urn:jtl:app_id`; a second shell client's tokens come out
//   issued two hours ago (the provider's JWT customizer), so they arrive expired;
// - a mixed key set: RSA 2048 (signing), EC P-256 and OKP Ed25519, numeric-string kids;
// - introspection at `{issuer}/oauth/v2/introspect` (Zitadel's path), for a client's own
//   tokens: the test asks it what the sidecar forwarded;
// - `POST /test/rotate`: a new RSA key signs from then on (the old one stays published),
//   by rebuilding the provider with the new key first; the listener and issuer stay.
//
// Usage: node provider.mjs '<setup JSON>' (see tests/oidc_interop.rs). Prints one JSON line
// when every provider listens; exits when stdin closes (the test ended).
//
// Test-only: keys are generated at start and live in memory. On Node.js 20 oidc-provider 9
// prints an "Unsupported runtime" warning on stderr (it asks for 22); everything used
// here works on 20.

import { createServer } from 'node:http';
import { generateKeyPairSync } from 'node:crypto';

import Provider, { errors } from 'oidc-provider';

const setup = JSON.parse(process.argv[2] ?? '{}');
const {
  appId,
  otherAppId,
  tenantId,
  serviceClients,
  shellClient,
  expiredShellClient,
  providers: wanted,
} = setup;

const APP_RESOURCE_PREFIX = 'urn:jtl:app:';
const EXPIRED_BY_S = 3600;

// Zitadel's kids are numeric strings.
let nextKid = 298817363741638600n;
const kid = () => String(nextKid++);

function privateJwk(type, options, extra) {
  const { privateKey } = generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), use: 'sig', kid: kid(), ...extra };
}
const rsaKey = () => privateJwk('rsa', { modulusLength: 2048 }, { alg: 'RS256' });

// Every client authenticates by HTTP Basic only and may use client credentials alone.
function clients() {
  return [...serviceClients, shellClient, expiredShellClient].map(({ id, secret }) => ({
    client_id: id,
    client_secret: secret,
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: 'openid',
  }));
}

function configuration(keys) {
  return {
    clients: clients(),
    jwks: { keys },
    routes: {
      token: '/oauth/v2/token',
      jwks: '/oauth/v2/keys',
      introspection: '/oauth/v2/introspect',
    },
    scopes: ['openid'],
    // Service tokens an hour; app tokens their resource server's accessTokenTTL.
    ttl: { ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? 3600 },
    cookies: { keys: ['interop-test-only'] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      // The test asks which client a forwarded service token belongs to.
      introspection: {
        enabled: true,
        allowedPolicy: async (_ctx, client, token) => token.clientId === client.clientId,
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => undefined,
        useGrantedResource: async () => false,
        async getResourceServerInfo(_ctx, resource) {
          const app = resource.startsWith(APP_RESOURCE_PREFIX)
            && resource.slice(APP_RESOURCE_PREFIX.length);
          if (app !== appId && app !== otherAppId) {
            throw new errors.InvalidTarget('unknown app');
          }
          return {
            audience: app,
            scope: 'openid',
            accessTokenFormat: 'jwt',
            accessTokenTTL: 600,
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    async extraTokenClaims(ctx, token) {
      // Zitadel refuses a client-credentials request without the openid scope.
      const requested = (ctx.oidc.params.scope ?? '').split(' ');
      if (!requested.includes('openid')) {
        throw new errors.InvalidScope('the openid scope is required', 'openid');
      }
      if (!token.resourceServer) return undefined; // a service token: opaque, no claims
      return {
        'urn:jtl:tenant_id': tenantId,
        'urn:jtl:app_id': token.resourceServer.audience,
      };
    },
    formats: {
      customizers: {
        // The "expired" shell client's tokens come out as if issued two hours ago.
        async jwt(_ctx, token, jwt) {
          if (token.clientId === expiredShellClient.id) {
            jwt.payload.iat -= 2 * EXPIRED_BY_S;
            jwt.payload.exp -= 2 * EXPIRED_BY_S;
          }
        },
      },
    },
  };
}

async function start({ name, trailingSlash }) {
  const server = createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  const base = `http://127.0.0.1:${port}`;
  const issuer = trailingSlash ? `${base}/` : base;
  const others = [
    privateJwk('ec', { namedCurve: 'P-256' }, { alg: 'ES256' }),
    privateJwk('ed25519', {}, { alg: 'EdDSA' }),
  ];
  let rsa = [rsaKey()];
  let handler;
  const build = () => {
    const provider = new Provider(issuer, configuration([...rsa, ...others]));
    provider.on('server_error', (_ctx, error) => console.error(`${name}: server_error`, error));
    handler = provider.callback();
  };
  build();
  server.on('request', (req, res) => {
    if (req.method === 'POST' && req.url === '/test/rotate') {
      rsa = [rsaKey(), ...rsa];
      build();
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ kid: rsa[0].kid }));
      return;
    }
    handler(req, res);
  });
  return {
    name,
    issuer,
    rotate: `${base}/test/rotate`,
    kids: { rsa: rsa[0].kid, ec: others[0].kid, okp: others[1].kid },
  };
}

const started = [];
for (const provider of wanted) {
  started.push(await start(provider));
}
process.stdout.write(`${JSON.stringify({ ready: true, providers: started })}\n`);
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
