// Error classes shared by the services. Each has a stable `code`; the message says what to change.
import { status as GrpcStatus } from "@grpc/grpc-js";

export class TpserveError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A configuration value is missing or out of range; the message names the option. */
export class ConfigError extends TpserveError {
  constructor(message: string) {
    super("CONFIG_INVALID", message);
  }
}

/** A model folder or checkpoint cannot be loaded; the message names the file or tensor. */
export class ModelLoadError extends TpserveError {
  constructor(message: string) {
    super("MODEL_LOAD", message);
  }
}

/** An error that maps onto a gRPC status for the client. */
export class RequestError extends TpserveError {
  readonly grpcCode: GrpcStatus;
  constructor(grpcCode: GrpcStatus, message: string) {
    super(GrpcStatus[grpcCode] ?? "UNKNOWN", message);
    this.grpcCode = grpcCode;
  }
}

export function invalidArgument(message: string): RequestError {
  return new RequestError(GrpcStatus.INVALID_ARGUMENT, message);
}
