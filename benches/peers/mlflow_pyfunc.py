"""Packages the bundled model as an MLflow pyfunc — the package's signature, the Python
pre-processing (pyfeatures.py) and onnxruntime — for `mlflow models serve` and MLServer's MLflow
runtime (benches/peers/run.sh).

    python3 benches/peers/mlflow_pyfunc.py --model models/pix-fraud --out /tmp/pix-fraud-pyfunc
    mlflow models serve -m /tmp/pix-fraud-pyfunc --env-manager local -h 127.0.0.1 -p 18500 -w 2
"""
import argparse
import pathlib
import shutil

import mlflow.pyfunc
import pandas as pd
from mlflow.models import Model

HERE = pathlib.Path(__file__).resolve().parent


class PixFraud(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import onnxruntime as ort
        from pyfeatures import Preprocessor
        self.pre = Preprocessor(pathlib.Path(context.artifacts["package"]))
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(pathlib.Path(context.artifacts["package"]) / "model.onnx"),
                                            options, providers=["CPUExecutionProvider"])

    def predict(self, context, model_input: pd.DataFrame, params=None):
        from pyfeatures import Transaction, from_oip_row
        # A one-row dataframe_split (`mlflow models serve`) leaves absent columns out; MLServer
        # decodes OIP field inputs, where absent DICT counts arrive as NaN.
        txs = [Transaction.model_validate(from_oip_row(r)) for r in model_input.to_dict(orient="records")]
        numeric, categories = self.pre.batch(txs)
        (score,) = self.session.run(["score"], {"features": numeric, "categories": categories})
        scores = score[:, 0].astype(float)
        return pd.DataFrame({"score": scores, "decision": [self.pre.decision(s) for s in scores]})


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="models/pix-fraud")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    out = pathlib.Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    signature = Model.load(str(pathlib.Path(args.model) / "MLmodel")).signature
    mlflow.pyfunc.save_model(str(out), python_model=PixFraud(), artifacts={"package": args.model},
                             code_paths=[str(HERE / "pyfeatures.py")], signature=signature)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
