// tedious (Node) client for tds-sim's driver test (tests/drivers.rs).
// Usage: node tedious_client.js PORT USER PASSWORD   (NODE_PATH names tedious' node_modules)
// Prints one "... OK" line per check and "ALL OK"; any failure exits non-zero.
const { Connection, Request, TYPES } = require('tedious');

const [port, userName, password] = process.argv.slice(2);
const conn = new Connection({
  server: '127.0.0.1',
  authentication: { type: 'default', options: { userName, password } },
  options: {
    port: Number(port), database: 'db1', encrypt: false, trustServerCertificate: true,
    connectTimeout: 5000, requestTimeout: 5000, rowCollectionOnRequestCompletion: true,
  },
});

function fail(e) { console.error('FAILED:', e && (e.stack || e.message || e)); process.exit(1); }
function check(cond, what) { if (!cond) fail(new Error(what)); }

function run(kind, sql, params = []) {
  return new Promise((resolve, reject) => {
    const req = new Request(sql, (err, rowCount, rows) => (err ? reject(err) : resolve({ rowCount, rows })));
    for (const [name, type, value] of params) req.addParameter(name, type, value);
    if (kind === 'batch') conn.execSqlBatch(req); else conn.execSql(req);
  });
}

async function main() {
  console.log('login OK');
  const q = await run('batch', 'SELECT @@SERVERNAME AS s, @@SPID AS spid, @@VERSION AS v');
  check(q.rows.length === 1 && q.rows[0][0].value === 'SQL1', 'server name');
  console.log('query OK');
  for (const id of [1, 2, 3]) {
    const r = await run('rpc', 'INSERT INTO dbo.ledger (id, at) VALUES (@id, @at)',
      [['id', TYPES.BigInt, id], ['at', TYPES.BigInt, id * 10]]);
    check(r.rowCount === 1, `rowCount ${r.rowCount}`);
  }
  console.log('insert OK');
  const c = await run('rpc', 'SELECT COUNT(*) AS n, MAX(id) AS m FROM dbo.ledger WHERE id BETWEEN @lo AND @hi',
    [['lo', TYPES.Int, 2], ['hi', TYPES.Int, 3]]);
  check(c.rows[0][0].value === 2 && String(c.rows[0][1].value) === '3', 'count and max');
  console.log('parameterised select OK');
  await new Promise((resolve, reject) => conn.beginTransaction(e => (e ? reject(e) : resolve())));
  await run('rpc', 'INSERT INTO dbo.ledger (id, at) VALUES (@id, 40)', [['id', TYPES.BigInt, 4]]);
  await new Promise((resolve, reject) => conn.commitTransaction(e => (e ? reject(e) : resolve())));
  const n = await run('batch', 'SELECT COUNT(*) FROM dbo.ledger');
  check(n.rows[0][0].value === 4, 'four rows after commit');
  console.log('transaction OK');
  console.log('ALL OK');
  conn.close();
}

conn.on('connect', (err) => (err ? fail(err) : main().catch(fail)));
conn.connect();
