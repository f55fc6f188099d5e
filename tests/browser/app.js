// The app's frontend (tests/browser_cors.rs), written as docs/frontend.md
// tells a JTL app to be: a fresh token from the AppBridge before every call, sent to the
// backend's origin (the sidecar) as `Authorization: Bearer <token>`. The checks run here,
// in the page, so what they see is what the browser lets a frontend see.

// ---- the AppBridge, stubbed -------------------------------------------------------------
// @jtl-software/cloud-apps-core talks to the App Shell (the parent window) over
// postMessage; this stub does the same with shell.html, which holds the tokens.

function createAppBridge() {
  let next = 0;
  const pending = new Map();
  window.addEventListener('message', (event) => {
    const message = event.data;
    if (event.source !== window.parent || !message || message.type !== 'appbridge-answer') return;
    const waiting = pending.get(message.id);
    if (!waiting) return;
    pending.delete(message.id);
    if (message.error !== undefined) waiting.reject(new Error(message.error));
    else waiting.resolve(message.result);
  });
  return {
    method: {
      call(method) {
        if (window.parent === window) return Promise.reject(new Error('not inside the App Shell'));
        const id = ++next;
        return new Promise((resolve, reject) => {
          pending.set(id, { resolve, reject });
          setTimeout(() => {
            if (pending.delete(id)) reject(new Error(`the App Shell did not answer ${method}`));
          }, 5000);
          window.parent.postMessage({ type: 'appbridge-call', id, method }, '*');
        });
      },
    },
  };
}

const appBridge = createAppBridge();

// ---- the frontend's calls -------------------------------------------------------------------

const TIMEOUT_MS = 10000;

// One call to the backend, as docs/frontend.md writes it. `token: undefined` asks the AppBridge for a fresh
// one; `token: null` sends none. The timeout turns a hang into a TimeoutError, which is not
// the TypeError a CORS refusal gives.
async function api(setup, path, { token, method = 'GET', json } = {}) {
  const headers = new Headers();
  if (token === undefined) token = await appBridge.method.call(setup.tokenMethod);
  if (token !== null) headers.set('Authorization', `Bearer ${token}`);
  const init = { method, headers, signal: AbortSignal.timeout(TIMEOUT_MS) };
  if (json !== undefined) {
    headers.set('Content-Type', 'application/json');
    init.body = JSON.stringify(json);
  }
  return fetch(new URL(path, setup.sidecar), init);
}

// ---- the checks ---------------------------------------------------------------------------

class CheckFailed extends Error {}

function expect(condition, what) {
  if (!condition) throw new CheckFailed(what);
}

async function readJson(response) {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new CheckFailed(`status ${response.status}, body is not JSON: ${text.slice(0, 300)}`);
  }
}

function sameKeys(object, keys) {
  const have = Object.keys(object).sort();
  return have.length === keys.length && [...keys].sort().every((key, i) => key === have[i]);
}

// A fetch the browser must refuse: it rejects with a TypeError and no response at all.
async function expectBlocked(promise) {
  let response;
  try {
    response = await promise;
  } catch (error) {
    expect(error instanceof TypeError, `fetch rejected, but with ${error.name}: ${error.message} (not the TypeError of a CORS refusal)`);
    return `fetch rejected with TypeError: ${error.message}`;
  }
  throw new CheckFailed(`the browser let the page read the answer (status ${response.status}): the origin was granted`);
}

// The checks for a page on an origin listed in `ingress.cors_allowed_origins`.
const allowedChecks = {
  async token_from_app_bridge(setup) {
    const token = await appBridge.method.call(setup.tokenMethod);
    expect(typeof token === 'string' && token.split('.').length === 3, `${setup.tokenMethod} gave ${JSON.stringify(token)}, not a compact JWS`);
    return `${setup.tokenMethod} answered a ${token.length}-character token`;
  },

  // GET with Authorization: not a simple request, so the browser preflights it first.
  async preflighted_get_answer_readable(setup) {
    const token = await appBridge.method.call(setup.tokenMethod);
    const response = await api(setup, '/api/orders?page=2', { token });
    const body = await readJson(response);
    expect(response.status === 200, `status ${response.status}: ${JSON.stringify(body)}`);
    expect(body.method === 'GET' && body.path === '/api/orders' && body.query === 'page=2', `the backend saw ${body.method} ${body.path}?${body.query}`);
    const seen = (name) => (body.headers[name] || [])[0];
    expect(seen('x-tenant-id') === setup.tenant, `x-tenant-id at the backend: ${seen('x-tenant-id')}, expected ${setup.tenant}`);
    expect(seen('x-user-id') === setup.user, `x-user-id at the backend: ${seen('x-user-id')}, expected ${setup.user}`);
    const forwarded = seen('authorization') || '';
    expect(forwarded.startsWith('Bearer ') && !forwarded.includes(token), `the backend got ${forwarded ? 'the user\'s token' : 'no Authorization'}, not the app's access token`);
    return `200 from the backend, tenant ${seen('x-tenant-id')}, user ${seen('x-user-id')}`;
  },

  // POST with a JSON body: Content-Type application/json is preflighted too.
  async preflighted_post_json_readable(setup) {
    const response = await api(setup, '/api/orders', { method: 'POST', json: { item: 'A-1', quantity: 2 } });
    const body = await readJson(response);
    expect(response.status === 200, `status ${response.status}: ${JSON.stringify(body)}`);
    expect(body.method === 'POST', `the backend saw ${body.method}`);
    expect(body.body === JSON.stringify({ item: 'A-1', quantity: 2 }), `the backend got the body ${JSON.stringify(body.body)}`);
    return '200, the backend got the JSON body';
  },

  // The sidecar's own 401 (the backend never sees it): without CORS headers on it, the
  // browser would hide it behind a TypeError and the frontend could not say why.
  async invalid_token_401_readable(setup) {
    const response = await api(setup, '/api/orders?bad', { token: setup.badToken });
    const body = await readJson(response);
    expect(response.status === 401, `status ${response.status}: ${JSON.stringify(body)}`);
    expect(sameKeys(body, ['error', 'error_description']), `body keys ${JSON.stringify(Object.keys(body))}, expected error and error_description`);
    expect(body.error === 'invalid_token', `error ${JSON.stringify(body.error)}`);
    expect(typeof body.error_description === 'string' && body.error_description.length > 0, 'no error_description');
    const signature = setup.badToken.split('.')[2];
    expect(!body.error_description.includes(signature), 'the description echoes the token');
    expect((response.headers.get('Content-Type') || '').startsWith('application/json'), `Content-Type ${response.headers.get('Content-Type')}`);
    const challenge = response.headers.get('WWW-Authenticate');
    expect(challenge !== null, 'WWW-Authenticate is not readable (not in Access-Control-Expose-Headers)');
    expect(challenge.startsWith('Bearer error="invalid_token"'), `WWW-Authenticate: ${challenge}`);
    // The sidecar's own answers carry the id of their log line, for the app's error report.
    expect(response.headers.get('X-Request-ID'), 'X-Request-ID is not readable (not in Access-Control-Expose-Headers)');
    return `401 ${JSON.stringify(body)}`;
  },

  // No token: a simple request (no preflight), and still a readable 401.
  async missing_token_401_readable(setup) {
    const response = await api(setup, '/api/orders?none', { token: null });
    const body = await readJson(response);
    expect(response.status === 401, `status ${response.status}: ${JSON.stringify(body)}`);
    expect(sameKeys(body, ['error', 'error_description']), `body keys ${JSON.stringify(Object.keys(body))}`);
    expect(body.error === 'missing_token', `error ${JSON.stringify(body.error)}`);
    expect(response.headers.get('WWW-Authenticate') === 'Bearer', `WWW-Authenticate: ${response.headers.get('WWW-Authenticate')}`);
    return `401 ${JSON.stringify(body)}`;
  },

  // Connect-tenant, answered by the sidecar itself (docs/frontend.md: the setup page posts it).
  async connect_tenant_readable(setup) {
    const sessionToken = await appBridge.method.call(setup.tokenMethod);
    const response = await api(setup, '/api/connect-tenant', { token: null, method: 'POST', json: { sessionToken } });
    const body = await readJson(response);
    expect(response.status === 200, `status ${response.status}: ${JSON.stringify(body)}`);
    expect(body.success === true && body.tenantId === setup.tenant && body.userId === setup.user, `answer ${JSON.stringify(body)}`);
    return `200 ${JSON.stringify(body)}`;
  },
};

// The checks for a page on an origin NOT in `ingress.cors_allowed_origins`.
const otherOriginChecks = {
  async token_from_app_bridge(setup) {
    return allowedChecks.token_from_app_bridge(setup);
  },

  // The preflight is answered without a grant: the browser never sends the request.
  async preflighted_get_blocked(setup) {
    return expectBlocked(api(setup, '/api/orders?page=2'));
  },

  // A simple request is sent, but its answer (a 401 without a grant) is hidden.
  async simple_get_blocked(setup) {
    return expectBlocked(api(setup, '/api/orders?none', { token: null }));
  },
};

// Runs every check of `setup.mode` ("allowed" or "other-origin") in order; never throws.
async function runChecks(setup) {
  const checks = setup.mode === 'allowed' ? allowedChecks : otherOriginChecks;
  const results = [];
  for (const [name, check] of Object.entries(checks)) {
    const started = performance.now();
    try {
      const detail = await check(setup);
      results.push({ check: name, ok: true, detail, ms: Math.round(performance.now() - started) });
    } catch (error) {
      let detail = error instanceof CheckFailed ? error.message : `${error.name}: ${error.message}`;
      if (error instanceof TypeError) detail += ' (the browser refused the request or its answer: CORS, or the network; the console check says which)';
      results.push({ check: name, ok: false, detail, ms: Math.round(performance.now() - started) });
    }
  }
  return { origin: location.origin, results };
}

window.runChecks = runChecks;
document.getElementById('state').textContent = 'ready';
