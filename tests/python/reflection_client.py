"""gRPC server reflection as Google's own Python client reads it (tests/front_ends/reflection.rs):
grpcio-reflection's ProtoReflectionDescriptorDatabase behind protobuf's DescriptorPool, the way a
Python tool builds messages for a server it has no .proto for. Prints one JSON object: the services
listed, the inference and health services' methods with their message types, the fields of a
nested message, and what a lookup of an unknown symbol raised (KeyError is the database's contract),
then whether a lookup after it still works.

    python reflection_client.py HOST:PORT
"""

import json
import sys

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def methods(service):
    return {
        m.name: [m.input_type.full_name, m.output_type.full_name] for m in service.methods
    }


def main():
    channel = grpc.insecure_channel(sys.argv[1])
    database = ProtoReflectionDescriptorDatabase(channel)
    pool = DescriptorPool(database)
    out = {"services": sorted(database.get_services())}
    out["inference"] = methods(pool.FindServiceByName("inference.GRPCInferenceService"))
    out["health"] = methods(pool.FindServiceByName("grpc.health.v1.Health"))
    tensor = pool.FindMessageTypeByName("inference.ModelInferRequest.InferInputTensor")
    out["input_tensor_fields"] = [f.name for f in tensor.fields]
    try:
        pool.FindServiceByName("inference.NoSuchService")
        out["unknown"] = "found"
    except KeyError:
        out["unknown"] = "KeyError"
    except grpc.RpcError as e:
        out["unknown"] = f"RpcError {e.code().name}"
    out["file_of_method"] = database.FindFileContainingSymbol(
        "inference.GRPCInferenceService.ModelInfer"
    ).name
    print(json.dumps(out))


if __name__ == "__main__":
    main()
