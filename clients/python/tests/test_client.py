"""PixguardClient against a running pixguard (PIXGUARD_URL; tests/spark/main.rs starts one whose queue
is tiny and whose worker is slowed, so concurrent batches are refused with 429 and retried)."""
import json
import os
import subprocess
import threading
import unittest

import requests

from pixguard_client import PixguardClient, PixguardError

URL = os.environ.get("PIXGUARD_URL", "http://127.0.0.1:8080")
PIXGUARD = os.environ.get("PIXGUARD_BIN", "target/debug/pixguard")


def synth(rows: int, seed: int) -> list[dict]:
    out = subprocess.run([PIXGUARD, "synth", "--rows", str(rows), "--seed", str(seed)],
                         check=True, capture_output=True, text=True).stdout
    return [json.loads(line)["transaction"] for line in out.splitlines()]


class ClientTest(unittest.TestCase):
    def test_scores_a_batch_in_order(self):
        txs = synth(50, 1)
        with PixguardClient(URL) as c:
            c.wait_ready(60)
            results = c.score(txs)
        self.assertEqual([r["end_to_end_id"] for r in results], [t["end_to_end_id"] for t in txs])
        self.assertTrue(all(0.0 <= r["score"] <= 1.0 for r in results))

    def test_one_bad_row_is_reported_and_the_rest_scored(self):
        txs = synth(20, 2)
        txs[7]["payer"]["ispb"] = "123"
        txs[13]["amount_cents"] = -1
        with PixguardClient(URL) as c:
            with self.assertRaises(PixguardError) as e:
                c.score(txs)
            self.assertEqual(e.exception.field, "transactions[7].payer.ispb")
            answers = c.score_tolerant(txs)
            plain = c.score([t for i, t in enumerate(txs) if i not in (7, 13)])
        self.assertEqual(answers[7]["field"], "payer.ispb")
        self.assertEqual(answers[13]["field"], "amount_cents")
        # The reason is pixguard's for that transaction sent alone: not led by the field again,
        # nor by its index in the batch that was resent without row 7.
        alone = requests.post(URL + "/v1/score", json=txs[13], timeout=30).json()
        self.assertEqual(f'{answers[13]["field"]}: {answers[13]["error"]}', alone["error"])
        scored = [a for i, a in enumerate(answers) if i not in (7, 13)]
        self.assertEqual([a["score"] for a in scored], [p["score"] for p in plain])

    def test_overload_is_retried_until_answered(self):
        txs = synth(100, 3)
        clients = [PixguardClient(URL, retries=50, backoff=0.02, max_backoff=0.2) for _ in range(8)]
        answers: dict = {}

        def run(i: int) -> None:
            answers[i] = clients[i].score(txs)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(len(answers), 8)
        first = [r["score"] for r in answers[0]]
        for i in range(8):
            self.assertEqual([r["score"] for r in answers[i]], first)
        self.assertGreater(sum(c.retried for c in clients), 0, "the server never said 429: no retry tested")


if __name__ == "__main__":
    unittest.main()
