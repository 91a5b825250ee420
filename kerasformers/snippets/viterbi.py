"""Viterbi decoding of linear-chain scores in numpy (bert4keras' `snippets.ViterbiDecoder`)."""

import numpy as np


class ViterbiDecoder:
    """Finds the best label path under per-position scores plus transition scores.

    The path score is `sum_t nodes[t, y_t] + sum_t trans[y_t, y_{t+1}]`, the
    quantity a `ConditionalRandomField` normalises. Subclass it and call
    `decode` on one sequence's scores, as bert4keras' NER examples do; `trans`
    may be replaced later (e.g. refreshed from the layer after each epoch).

    Args:
        trans: (num_labels, num_labels) transition scores; `trans[i, j]` scores
            label i followed by label j.
        starts: labels allowed at the first position (None: any).
        ends: labels allowed at the last position (None: any).

    Example:
        >>> decoder = ViterbiDecoder(keras.ops.convert_to_numpy(crf.trans), starts=[0], ends=[0])
        >>> labels = decoder.decode(model.predict(token_ids)[0][:length])

    Reference:
        Viterbi 1967; https://kexue.fm/archives/5542
    """

    def __init__(self, trans, starts=None, ends=None):
        trans = np.asarray(trans)
        if trans.ndim != 2 or trans.shape[0] != trans.shape[1]:
            raise ValueError(
                f"ViterbiDecoder: trans must be a square (num_labels, num_labels) matrix, "
                f"got shape {trans.shape}"
            )
        self.trans = trans
        self.num_labels = len(trans)
        self.non_starts = self._complement(starts, "starts")
        self.non_ends = self._complement(ends, "ends")

    def _complement(self, allowed, name):
        """The labels not in `allowed` (nothing is excluded when allowed is None)."""
        if allowed is None:
            return []
        allowed = [int(i) for i in allowed]
        bad = [i for i in allowed if not 0 <= i < self.num_labels]
        if bad:
            raise ValueError(
                f"ViterbiDecoder: {name} holds labels {bad} outside [0, {self.num_labels})"
            )
        if not allowed:
            raise ValueError(f"ViterbiDecoder: {name} must allow at least one label")
        return [i for i in range(self.num_labels) if i not in allowed]

    def decode(self, nodes):
        """The best path for one sequence.

        Args:
            nodes: (seq_len, num_labels) per-position label scores (left
                unchanged; bert4keras modified them in place).

        Returns:
            np.ndarray of seq_len label ids.
        """
        nodes = np.array(nodes, dtype=np.float64)  # a copy: the caller's array stays as is
        if nodes.ndim != 2 or nodes.shape[1] != self.num_labels:
            raise ValueError(
                f"ViterbiDecoder.decode: nodes must have shape (seq_len, {self.num_labels}), "
                f"got {nodes.shape}"
            )
        if len(nodes) == 0:
            return np.zeros((0,), dtype=np.int64)
        nodes[0, self.non_starts] = -np.inf
        nodes[-1, self.non_ends] = -np.inf
        trans = self.trans.astype(np.float64)
        scores = nodes[0]  # best score of a path ending in each label
        backpointers = []
        for node in nodes[1:]:
            # (previous label, label): extend every best path by one step
            candidates = scores[:, None] + trans + node[None, :]
            backpointers.append(candidates.argmax(axis=0))
            scores = candidates.max(axis=0)
        path = [int(scores.argmax())]
        for pointers in reversed(backpointers):
            path.append(int(pointers[path[-1]]))
        return np.array(path[::-1], dtype=np.int64)
