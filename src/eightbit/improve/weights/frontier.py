"""The quantized network carried forward, one layer at a time (docs/numerics.md §I.8.1).

The layer-wise reconstruction reads each layer's input as the QDQ network *reconstructed
so far* computes it. Running that network from the graph inputs for every layer costs L
passes of growing length; ``Frontier`` runs each node once instead. It keeps the values
(per batch) of the tensors that nodes already run produced and nodes still to run read,
and for the next layer runs only the piece of the QDQ network between them and that
layer's input, with the weights chosen so far.

What is kept is what ONNX Runtime would have computed: a piece starts at the outputs of
QuantizeLinear nodes (int8/uint8, the compact form of a grid value) and re-runs their
DequantizeLinear nodes, so the same DQ -> op -> Q groups reach ONNX Runtime's fusions
and int8 kernels as in the whole network. A DequantizeLinear, and a node computed from
constants alone, is never kept: it is re-run where it is read.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import onnx

from eightbit.calibrate.data import Batch
from eightbit.graph import make_session
from eightbit.graph.subgraph import piece

__all__ = ["Frontier"]


class Frontier:
    """Values of the QDQ network ``model``'s tensors, per batch, read in ``order``.

    ``order``: the tensors that will be asked for, in order (each layer's input). Every
    call to ``read`` may give a new export of the same network (same nodes, other
    constants). ``peak_bytes``: the most bytes the kept values ever held; ``freed``: how
    many kept tensors were dropped once nothing left to run read them.
    """

    def __init__(
        self,
        model: onnx.ModelProto,
        order: Sequence[str],
        batches: Sequence[Batch],
        threads: int | None = None,
    ) -> None:
        self._batches = list(batches)
        self._threads = threads
        self._remaining = list(order)
        graph = model.graph
        self._names = [node.name for node in graph.node]
        self._inputs = [tuple(node.input) for node in graph.node]
        self._outputs = [tuple(name for name in node.output if name) for node in graph.node]
        self._producer = {name: i for i, node in enumerate(graph.node) for name in node.output}
        self._graph_inputs = {value.name for value in graph.input}
        self._constants = {tensor.name for tensor in graph.initializer}
        self._rerun = self._rerun_nodes(graph)
        self._done: set[int] = set()
        self.values: dict[str, list[np.ndarray]] = {}
        self.peak_bytes = 0
        self.freed = 0

    def _rerun_nodes(self, graph: onnx.GraphProto) -> set[int]:
        """DequantizeLinear nodes and nodes computed from constants alone: never kept."""
        rerun, constant = set(), set(self._constants)
        for index, node in enumerate(graph.node):
            if all(not name or name in constant for name in node.input):
                constant.update(node.output)
                rerun.add(index)
            elif node.op_type == "DequantizeLinear":
                rerun.add(index)
        return rerun

    def read(self, model: onnx.ModelProto, tensor: str) -> Iterator[np.ndarray]:
        """``tensor``'s value on each batch in turn, as the QDQ network ``model`` computes it.

        ``tensor`` must be the next of ``order``; ``model`` an export of the network given
        at the start (the nodes are matched by position and checked by name). Read every
        batch: the values kept for the next layers are taken as the batches go by.
        """
        if not self._remaining or self._remaining[0] != tensor:
            raise ValueError(f"the frontier expected {self._remaining[:1]}, not {tensor!r}")
        self._remaining.pop(0)
        if tensor in self._graph_inputs:
            yield from (np.asarray(batch[tensor]) for batch in self._batches)
            return
        if tensor in self.values:
            found = self.values[tensor]
            self._drop_unneeded(self._needed())
            yield from found
            return
        nodes = self._to_run(tensor)
        if [model.graph.node[i].name for i in nodes] != [self._names[i] for i in nodes]:
            raise ValueError("the frontier was given a model with other nodes")
        kept = [i for i in nodes if i not in self._rerun]
        self._done.update(kept)
        needed = self._needed()
        new = [name for i in kept for name in self._outputs[i] if name in needed]
        wanted = list(dict.fromkeys([tensor, *new]))
        fed = self._fed(nodes)
        example = {name: values[0] for name, values in fed.items()}
        cut = piece(model, nodes, example, wanted)
        session = make_session(cut, threads=self._threads, lean=True)
        for number in range(len(self._batches)):
            feed = {name: values[number] for name, values in fed.items()}
            results = dict(zip(wanted, session.run(wanted, feed), strict=True))
            for name in new:
                self.values.setdefault(name, []).append(np.asarray(results[name]))
            yield np.asarray(results[tensor])
        self._drop_unneeded(needed)

    def _fed(self, nodes: Sequence[int]) -> dict[str, list[np.ndarray]]:
        """The kept values and graph inputs the nodes read, per batch."""
        written = {name for i in nodes for name in self._outputs[i]}
        fed: dict[str, list[np.ndarray]] = {}
        for i in nodes:
            for name in self._inputs[i]:
                if not name or name in written or name in fed or name in self._constants:
                    continue
                if name in self.values:
                    fed[name] = self.values[name]
                elif name in self._graph_inputs:
                    fed[name] = [np.asarray(batch[name]) for batch in self._batches]
        return fed

    def _to_run(self, tensor: str) -> list[int]:
        """The nodes between the kept values (and the graph inputs) and ``tensor``, in the
        model's order."""
        nodes: set[int] = set()
        pending = [tensor]
        while pending:
            name = pending.pop()
            if not name or name in self.values or name in self._graph_inputs:
                continue
            index = self._producer.get(name)
            if index is None or index in nodes:
                continue  # an initializer, or already walked
            if index in self._done:
                raise AssertionError(f"{name!r} was computed but not kept")
            nodes.add(index)
            pending.extend(self._inputs[index])
        return sorted(nodes)

    def _needed(self) -> set[str]:
        """The computed tensors that nodes still to run read for the layers still to come."""
        needed: set[str] = set()
        walked: set[int] = set()
        pending = [name for name in self._remaining if name not in self._graph_inputs]
        while pending:
            name = pending.pop()
            index = self._producer.get(name)
            if index is None or index in walked:
                continue
            if index in self._done:
                needed.add(name)
                continue
            walked.add(index)
            pending.extend(n for n in self._inputs[index] if n)
        return needed

    def _drop_unneeded(self, needed: set[str]) -> None:
        self.peak_bytes = max(self.peak_bytes, self.bytes())
        for name in [name for name in self.values if name not in needed]:
            del self.values[name]
            self.freed += 1

    def bytes(self) -> int:
        """Bytes the kept values hold now."""
        return sum(value.nbytes for values in self.values.values() for value in values)
