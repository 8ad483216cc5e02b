"""A TLS gateway that stands where Cloud Endpoints stands, for `pixguard bench --url https://…`.

Makes a throwaway CA and a certificate for 127.0.0.1/localhost (cryptography), writes the CA to
--ca-out (the test hands it to the bench as SSL_CERT_FILE), then serves HTTPS on a free loopback
port: a request without the right `x-api-key` header gets 401 as ESPv2 answers it, any other is
forwarded to the pixguard at --backend over plain HTTP and its answer relayed. Prints
`listening PORT` once ready; runs until killed.
"""

import argparse
import datetime
import http.client
import http.server
import ipaddress
import ssl
import sys
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def certificates(ca_out):
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pixguard test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    with open(ca_out, "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    chain = tempfile.NamedTemporaryFile(suffix=".pem", delete=False)
    chain.write(leaf.public_bytes(serialization.Encoding.PEM))
    chain.write(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    chain.close()
    return chain.name


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", required=True, help="host:port of the pixguard HTTP API")
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--ca-out", required=True)
    args = ap.parse_args()

    backend_host, backend_port = args.backend.rsplit(":", 1)

    class Gateway(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def reply(self, status, headers, body):
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("x-api-key") != args.api_key:
                msg = b'{"code":16,"message":"UNAUTHENTICATED: Method doesn\'t allow unregistered callers"}'
                return self.reply(401, [("Content-Type", "application/json")], msg)
            conn = self.server.backend()
            conn.request("POST", self.path, body, {"Content-Type": self.headers.get("Content-Type", "")})
            answer = conn.getresponse()
            data = answer.read()
            keep = [(k, v) for k, v in answer.getheaders() if k.lower().startswith(("content-type", "x-"))]
            self.reply(answer.status, keep, data)

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def backend(self):
            return http.client.HTTPConnection(backend_host, int(backend_port), timeout=10)

    chain = certificates(args.ca_out)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain)
    server = Server(("127.0.0.1", 0), Gateway)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"listening {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
