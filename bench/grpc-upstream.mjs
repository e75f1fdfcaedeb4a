// The gRPC upstream of the bench's `grpc` phase: @grpc/grpc-js serving tollgate.test.Echo/Unary (the
// proto of the gRPC tests) without TLS on 127.0.0.1:PORT, answering each request with its own text.
// Prints `listening PORT` once bound.
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const port = Number(process.argv[2]);
const proto = protoLoader.loadSync(fileURLToPath(new URL('../test/fixtures/echo.proto', import.meta.url)), { keepCase: true, defaults: true });
const server = new grpc.Server();
server.addService(proto['tollgate.test.Echo'], {
  Unary: (call, callback) => callback(null, { text: call.request.text, index: 0 }),
});
server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err, bound) => {
  if (err) {
    console.error(err.message);
    process.exit(1);
  }
  console.log(`listening ${bound}`);
});
process.on('SIGTERM', () => server.tryShutdown(() => process.exit(0)));
