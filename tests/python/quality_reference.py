"""Production quality computed independently with scikit-learn, as an ML engineer would
check a monitoring tool: reads the predictions the served model answered (its scores,
one row per example) and the true labels sent as feedback, prints the figures (and the
confusion matrix) as JSON.

Multiclass figures are macro averages; ROC AUC is one-vs-rest on each class's score
column, averaged over the classes (scikit-learn's macro average of binary AUCs)."""

import argparse
import json

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.preprocessing import label_binarize

parser = argparse.ArgumentParser()
parser.add_argument("--rows", required=True, help="JSON: {scores: [[...]], labels: [...]}")
args = parser.parse_args()

with open(args.rows) as f:
    rows = json.load(f)
scores = np.asarray(rows["scores"], dtype=np.float64)
labels = np.asarray(rows["labels"], dtype=np.int64)
classes = list(range(scores.shape[1]))
predicted = scores.argmax(axis=1)
binary = len(classes) == 2
average = "binary" if binary else "macro"
figures = {
    "rows": int(labels.size),
    "accuracy": accuracy_score(labels, predicted),
    "precision": precision_score(labels, predicted, average=average, zero_division=0),
    "recall": recall_score(labels, predicted, average=average, zero_division=0),
    "f1": f1_score(labels, predicted, average=average, zero_division=0),
    "roc_auc": roc_auc_score(labels, scores[:, 1])
    if binary
    else roc_auc_score(label_binarize(labels, classes=classes), scores, average="macro"),
}
out = {k: float(v) for k, v in figures.items()}
# Rows: true label, columns: predicted, over the classes in order.
out["confusion"] = confusion_matrix(labels, predicted, labels=classes).tolist()
print(json.dumps(out))
