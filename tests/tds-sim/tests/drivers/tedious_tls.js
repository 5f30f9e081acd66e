// tedious (Node) over TLS, for tds-sim's TLS test (tests/tls.rs).
// Usage: node tedious_tls.js PORT USER PASSWORD ENCRYPT CAFILE   (NODE_PATH names tedious' node_modules)
// ENCRYPT: strict (TDS 8.0: TLS first, ALPN tds/8.0), true (TDS 7.x TLS after PRELOGIN) or
// false (no TLS: ENCRYPT_NOT_SUP).
// The certificate is checked against CAFILE only (trustServerCertificate false).
// Prints "<ENCRYPT> query OK" and exits 0, or "FAILED: ..." and exits 1.
const fs = require('fs');
const { Connection, Request } = require('tedious');

const [port, userName, password, encrypt, cafile] = process.argv.slice(2);
const conn = new Connection({
  server: '127.0.0.1',
  authentication: { type: 'default', options: { userName, password } },
  options: {
    port: Number(port), database: 'db1',
    encrypt: encrypt === 'strict' ? 'strict' : encrypt === 'true',
    trustServerCertificate: false,
    cryptoCredentialsDetails: { ca: fs.readFileSync(cafile) },
    connectTimeout: 5000, requestTimeout: 5000, rowCollectionOnRequestCompletion: true,
  },
});

function fail(e) { console.log('FAILED:', e && (e.stack || e.message || e)); process.exit(1); }

conn.on('connect', (err) => {
  if (err) return fail(err);
  const req = new Request('SELECT @@SERVERNAME AS s, 42 AS n', (e, rowCount, rows) => {
    if (e) return fail(e);
    if (rows.length !== 1 || rows[0][0].value !== 'SQL1' || rows[0][1].value !== 42) {
      return fail(new Error('unexpected rows ' + JSON.stringify(rows)));
    }
    console.log(`${encrypt} query OK`);
    conn.close();
  });
  conn.execSqlBatch(req);
});
conn.on('error', fail);
conn.connect();
