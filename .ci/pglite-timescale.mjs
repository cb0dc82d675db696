// A TimescaleDB test fixture: PGlite (PostgreSQL 17 in WASM) with the
// TimescaleDB extension, served over the PostgreSQL wire protocol on
// 127.0.0.1:$PORT. One connection at a time; any password; no TLS.
import { PGlite } from '@electric-sql/pglite'
import { timescaledb } from '@electric-sql/pglite/timescaledb'
import { PGLiteSocketServer } from '@electric-sql/pglite-socket'

const db = await PGlite.create({ extensions: { timescaledb } })
const server = new PGLiteSocketServer({ db, port: Number(process.env.PORT || 5433), host: '127.0.0.1' })
await server.start()
console.log('ready')
