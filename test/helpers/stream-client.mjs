// A separate client process for disconnect tests: streams one request and prints a line per chunk; the test kills
// it with SIGKILL mid-stream, which closes its connection without a cancel from the client library.
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const [address, protoDir, prompt] = process.argv.slice(2);
const def = protoLoader.loadSync("tpserve/v1/generation.proto", { includeDirs: [protoDir], longs: Number, enums: String, defaults: true, oneofs: true });
const pkg = grpc.loadPackageDefinition(def);
const client = new pkg.tpserve.v1.Generation(address, grpc.credentials.createInsecure());
const call = client.Generate({ text: prompt, maxTokens: 900, ignoreEos: true });
call.on("data", (c) => process.stdout.write(`chunk ${c.tokenIds.join(",")}\n`));
call.on("error", (e) => process.stdout.write(`error ${e.code}\n`));
