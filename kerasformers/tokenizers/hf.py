"""``HFTokenizer``: a Hugging Face ``tokenizer.json`` behind bert4keras' tokenizer API.

Modern checkpoints (LLaMA, Qwen, Mistral, Gemma, but also most BERTs on the
Hub) ship their tokenizer as one ``tokenizer.json``, run by the Rust
``tokenizers`` package: byte-level BPE, Unigram or WordPiece, with a
normaliser, a pre-tokenizer, added/special tokens that are never split, and a
post-processor that adds the special tokens (``[CLS] $A [SEP]``,
``<|begin_of_text|> $A``, or nothing for Qwen). ``HFTokenizer`` loads it with
that package, so ids are the package's (and transformers') ids, and adds what a
bert4keras user calls: ``encode`` -> ``(token_ids, segment_ids)`` with
bert4keras' ``maxlen`` truncation, ``tokenize``, ``decode``, ``rematch``, the
``_token_*_id`` attributes, and ``apply_chat_template`` for chat models.

Choices and differences from transformers' ``PreTrainedTokenizerFast``:

* ``decode`` drops special tokens by default (``skip_special_tokens=True``),
  as bert4keras' ``decode`` drops ``[CLS]``-like tokens; transformers keeps
  them unless asked.
* ``maxlen`` truncates as bert4keras does: one token at a time from the
  longer text (the first on ties), keeping the special tokens, so an odd
  leftover token goes to the second text; transformers' ``longest_first``
  gives it to the longer one.
* ``tokenizer_config.json`` is read for the chat template and the named
  special tokens (``bos_token``, ``eos_token``, ``pad_token``, ...); a named
  token missing from ``tokenizer.json`` is added as a special token, as
  transformers does. The post-processor of ``tokenizer.json`` decides the
  special tokens of ``encode``: ``add_bos_token``/``add_eos_token`` in the
  config are ignored, as transformers 5's ``AutoTokenizer.from_pretrained``
  ignores them for a tokenizer.json (constructing ``PreTrainedTokenizerFast``
  directly with them rebuilds it instead). Other config keys
  (``model_max_length``, ``padding_side``, ...) are ignored too.
* Padding and truncation stored in ``tokenizer.json`` are switched off:
  bert4keras pads batches itself (``sequence_padding``).

Example:
    >>> tokenizer = HFTokenizer("Qwen2.5-0.5B-Instruct")  # doctest: +SKIP
    >>> token_ids, segment_ids = tokenizer.encode("你好，世界")  # doctest: +SKIP
    >>> messages = [{"role": "user", "content": "hi"}]
    >>> prompt = tokenizer.apply_chat_template(messages)  # doctest: +SKIP
    >>> prompt.endswith("user\\nhi<|im_end|>\\n<|im_start|>assistant\\n")  # doctest: +SKIP
    True
"""

import json
import os
from collections.abc import Mapping

from kerasformers.tokenizers import chat as _chat
from kerasformers.tokenizers.base import TokenizerBase, _check_text

__all__ = ["HFTokenizer"]

# transformers' apply_chat_template options that are not template variables.
_TRANSFORMERS_ONLY = frozenset({
    "continue_final_message", "return_dict", "return_assistant_tokens_mask",
    "sanitize_control_tokens", "padding", "truncation", "max_length", "return_tensors",
    "tokenizer_kwargs", "conversation",
})  # fmt: skip


def _find_tokenizer_file(path):
    path = os.fspath(path)
    if os.path.isdir(path):
        candidate = os.path.join(path, "tokenizer.json")
        if not os.path.isfile(candidate):
            found = sorted(name for name in os.listdir(path) if name.endswith((".json", ".model")))
            raise FileNotFoundError(
                f"HFTokenizer: no tokenizer.json in the folder {path} (its .json/.model files: "
                f"{found or 'none'}); a SentencePiece .model goes to SpTokenizer, a vocab.txt "
                "to Tokenizer"
            )
        return candidate
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"HFTokenizer: {path} does not exist (expected a tokenizer.json file or a folder "
            "holding one)"
        )
    return path


def _longest_first(lengths, budget):
    """bert4keras' ``truncate_sequences`` lengths, in closed form.

    One token at a time is popped from the longest sequence, the first on
    ties, until the total fits ``budget``.
    """
    lengths = list(lengths)
    excess = sum(lengths) - budget
    if excess <= 0:
        return lengths
    if len(lengths) == 1:
        return [budget]
    first, second = lengths
    # The longer one shrinks to the other's length, then they alternate, first first.
    step = min(excess, abs(first - second))
    if first >= second:
        first -= step
    else:
        second -= step
    excess -= step
    return [first - (excess + 1) // 2, second - excess // 2]


class HFTokenizer(TokenizerBase):
    """A Hugging Face ``tokenizer.json`` (BPE, Unigram, WordPiece) with bert4keras' API.

    Args:
        path: a ``tokenizer.json`` file, or a folder holding one (and usually
            ``tokenizer_config.json``).
        tokenizer_config: the transformers tokenizer config: a path (file or
            folder), a dict, or None to read ``tokenizer_config.json`` beside
            ``tokenizer.json`` if there is one. It gives the chat template and
            the named special tokens.

    Attributes:
        backend_tokenizer: the ``tokenizers.Tokenizer`` doing the work.
        _token_start_id, _token_end_id: the ids of the tokens the
            post-processor puts around a single text (``[CLS]``/``[SEP]`` for
            BERT, ``<|begin_of_text|>``/None for LLaMA-3, None/None for Qwen).
        _token_pad_id, _token_unk_id, _token_mask_id: ids of the config's
            ``pad_token``/``unk_token``/``mask_token`` (the model's unknown
            token and the stored padding token when the config has none), or None.

    Raises:
        FileNotFoundError: if ``path`` is not a tokenizer.json nor a folder
            with one, or ``tokenizer_config`` names a missing file.
        ValueError: if a file is not valid JSON or the config is malformed.

    Example:
        >>> tokenizer = HFTokenizer("bert-base-chinese/tokenizer.json")  # doctest: +SKIP
        >>> tokenizer.encode("今天", "天气", maxlen=6)  # doctest: +SKIP
        ([101, 791, 1921, 102, 1921, 102], [0, 0, 0, 0, 1, 1])
    """

    def __init__(self, path, tokenizer_config=None):
        from tokenizers import AddedToken, Tokenizer

        self._path = _find_tokenizer_file(path)
        folder = os.path.dirname(os.path.abspath(self._path))
        try:
            backend = Tokenizer.from_file(self._path)
        except Exception as error:  # the package raises a bare Exception
            raise ValueError(
                f"HFTokenizer: {self._path} is not a tokenizer.json the tokenizers package can "
                f"read: {error}"
            ) from None
        backend.no_padding()
        backend.no_truncation()
        self.backend_tokenizer = backend

        read = _chat.read_tokenizer_config(tokenizer_config, folder)
        self._config, self._config_source, self._folder = read.config, read.source, folder
        self.special_tokens_map = read.special_tokens
        self.chat_template, self._chat_source = read.chat_template, read.chat_template_source

        # transformers adds the config's named tokens that tokenizer.json lacks.
        missing = [
            token
            for token in self.special_tokens_map.values()
            if backend.token_to_id(token) is None
        ]
        if missing:
            backend.add_special_tokens(
                [AddedToken(t, special=True, normalized=False) for t in missing]
            )

        start, end = self._template_tokens()
        super().__init__(token_start=start, token_end=end)
        self._token_unk = self.special_tokens_map.get("unk_token") or self._model_unk_token()
        self._token_pad = self.special_tokens_map.get("pad_token")
        self._token_mask = self.special_tokens_map.get("mask_token")
        if self._token_pad is None and isinstance(backend.padding, Mapping):
            self._token_pad = backend.padding.get("pad_token")
        vocab = backend.get_vocab(with_added_tokens=True)
        self._vocab_size = max(vocab.values()) + 1 if vocab else 0
        for name in ("pad", "unk", "mask", "start", "end"):
            token = getattr(self, f"_token_{name}")
            setattr(
                self, f"_token_{name}_id", None if token is None else backend.token_to_id(token)
            )

    # ------------------------------------------------------------ set-up

    def _template_tokens(self):
        """The tokens the post-processor puts before and after a single text."""
        backend = self.backend_tokenizer
        probe = backend.encode("a", add_special_tokens=False)
        processed = backend.post_process(probe, None, add_special_tokens=True)
        mask, tokens = processed.special_tokens_mask, processed.tokens
        content = [i for i, special in enumerate(mask) if not special]
        if not content:  # the probe vanished (a model without "a"): all are start tokens
            return (tokens[0] if tokens else None), None
        before, after = tokens[: content[0]], tokens[content[-1] + 1 :]
        return (before[0] if before else None), (after[-1] if after else None)

    def _model_unk_token(self):
        model = self.backend_tokenizer.model
        token = getattr(model, "unk_token", None)
        if token is None and type(model).__name__ == "Unigram":
            unk_id = json.loads(self.backend_tokenizer.to_str())["model"].get("unk_id")
            token = None if unk_id is None else self.backend_tokenizer.id_to_token(unk_id)
        return token

    # ------------------------------------------------------------ vocabulary

    @property
    def vocab_size(self):
        """One more than the largest id, added tokens included: the rows an embedding needs."""
        return self._vocab_size

    @property
    def token_start(self):
        """The token put before a text (``[CLS]``, ``<|begin_of_text|>``), or None."""
        return self._token_start

    @property
    def token_end(self):
        """The token put after a text (``[SEP]``, ``</s>``), or None."""
        return self._token_end

    @property
    def token_pad(self):
        """The padding token (the config's ``pad_token``), or None."""
        return self._token_pad

    @property
    def token_unk(self):
        """The unknown token, or None (byte-level BPE has none)."""
        return self._token_unk

    @property
    def pad_id(self):
        """The id of ``token_pad``, or None: what ``sequence_padding`` should pad with."""
        return self._token_pad_id

    @property
    def bos_token(self):
        """The config's ``bos_token``, or None."""
        return self.special_tokens_map.get("bos_token")

    @property
    def eos_token(self):
        """The config's ``eos_token`` (where generation stops), or None."""
        return self.special_tokens_map.get("eos_token")

    @property
    def eos_token_id(self):
        """The id of ``eos_token`` (``generate(..., end_id=...)``), or None."""
        token = self.eos_token
        return None if token is None else self.backend_tokenizer.token_to_id(token)

    def token_to_id(self, token):
        """Returns the id of ``token``, or the unknown id if it is not in the vocab.

        Raises:
            ValueError: if ``token`` is not in a vocab without unknown token.
        """
        i = self.backend_tokenizer.token_to_id(token)
        if i is None:
            i = self._token_unk_id
            if i is None:
                raise ValueError(
                    f"token {token!r} is not in the vocab of {self._path}, which has no unknown "
                    "token (byte-level BPE spells every text with its own tokens: use tokenize)"
                )
        return i

    def id_to_token(self, i):
        """Returns the token of id ``i``.

        Raises:
            ValueError: if ``i`` is not an id of the vocab, naming the valid ids.
        """
        token = None
        if not isinstance(i, bool) and hasattr(i, "__index__") and 0 <= int(i) < self._vocab_size:
            token = self.backend_tokenizer.id_to_token(int(i))
        if token is None:
            raise ValueError(self._bad_id_message(i))
        return token

    def _bad_id_message(self, i):
        valid = f"valid ids: 0..{self._vocab_size - 1}"
        if isinstance(i, bool) or not hasattr(i, "__index__"):
            return f"token id {i!r} is not an integer ({valid})"
        return f"token id {int(i)} is outside the vocabulary of {self._path} ({valid})"

    # ------------------------------------------------------------ encoding

    def _check_pair(self, first_text, second_text):
        _check_text(first_text, "first_text")
        if second_text is not None:
            _check_text(second_text, "second_text")

    def _encoding(self, first_text, second_text=None, maxlen=None, add_special_tokens=True,
                  truncate_from="right"):  # fmt: skip
        self._check_pair(first_text, second_text)
        backend = self.backend_tokenizer
        if maxlen is None:
            return backend.encode(first_text, second_text, add_special_tokens=add_special_tokens)
        if truncate_from not in ("right", "left"):
            raise ValueError(f"truncate_from must be 'right' or 'left', got {truncate_from!r}")
        encodings = [backend.encode(first_text, add_special_tokens=False)]
        if second_text is not None:
            encodings.append(backend.encode(second_text, add_special_tokens=False))
        specials = backend.num_special_tokens_to_add(len(encodings) == 2)
        budget = maxlen - (specials if add_special_tokens else 0)
        if budget < 0:
            raise ValueError(
                f"maxlen={maxlen} is too small: the post-processor adds {specials} special "
                "tokens on its own"
            )
        lengths = _longest_first([len(e) for e in encodings], budget)
        for encoding, length in zip(encodings, lengths, strict=True):
            if length < len(encoding):
                encoding.truncate(length, direction=truncate_from)
        return backend.post_process(*encodings, add_special_tokens=add_special_tokens)

    def encode(self, first_text, second_text=None, maxlen=None, add_special_tokens=True,
               truncate_from="right"):  # fmt: skip
        """Returns the token ids and segment ids of a text or a text pair.

        The special tokens are those of ``tokenizer.json``'s post-processor
        (``[CLS] a [SEP] b [SEP]`` for BERT, none for Qwen), and the segment
        ids its type ids (1 for the second text where the template says so).
        Special tokens written in the text (``<|im_end|>``) stay one token.

        Args:
            first_text: the text.
            second_text: optional second text.
            maxlen: the largest number of ids. Tokens are dropped one at a time
                from the longer text (the first on ties) until they fit, as
                bert4keras does; the special tokens are kept.
            add_special_tokens: whether the post-processor adds its tokens.
            truncate_from: drop tokens at the ``"right"`` end of a text or at
                its ``"left"`` end.

        Returns:
            ``(token_ids, segment_ids)``, two lists of ints.

        Raises:
            TypeError: if a text is not a str.
            ValueError: if ``maxlen`` cannot even hold the special tokens.
        """
        encoding = self._encoding(
            first_text, second_text, maxlen, add_special_tokens, truncate_from
        )
        return list(encoding.ids), list(encoding.type_ids)

    def tokenize(self, text, maxlen=None, add_special_tokens=True):
        """Splits ``text`` into token strings, special tokens included (as bert4keras).

        Byte-level BPE tokens are the package's byte strings (``"Ġworld"``).
        """
        return list(self._encoding(text, None, maxlen, add_special_tokens).tokens)

    def decode(self, ids, skip_special_tokens=True):
        """Turns ids back into text with ``tokenizer.json``'s decoder.

        Args:
            ids: token ids (a list, a NumPy array, ...).
            skip_special_tokens: drop special tokens (``[CLS]``, ``<|im_end|>``),
                as bert4keras' ``decode`` drops its special tokens; False keeps them.

        Returns:
            The text. For byte-level BPE, ``decode(encode(text)[0]) == text``.

        Raises:
            ValueError: if an id is outside the vocab (the package would skip it
                silently), naming it and the valid ids.
        """
        checked = []
        for i in ids:
            if isinstance(i, bool) or not hasattr(i, "__index__"):
                raise ValueError(self._bad_id_message(i))
            i = int(i)
            if not 0 <= i < self._vocab_size:
                raise ValueError(self._bad_id_message(i))
            checked.append(i)
        return self.backend_tokenizer.decode(checked, skip_special_tokens=skip_special_tokens)

    def rematch(self, text, tokens):
        """Maps each token back to the character positions it came from in ``text``.

        The positions come from the package's offsets of ``text``'s encoding;
        ``tokens`` are matched against it in order, so the output of
        ``tokenize(text)``, with or without special tokens or ``maxlen``, maps.

        Args:
            text: the original text.
            tokens: its tokens (e.g. from ``tokenize``).

        Returns:
            One list of indices into ``text`` per token: ``[]`` for the tokens
            the post-processor added and for tokens not found. A byte-level
            token holding part of a character (one byte of an emoji) maps to
            that whole character, so neighbouring tokens can share an index.

        Raises:
            TypeError: if ``text`` is not a str.

        Example:
            >>> tokenizer.rematch("Hi 你", tokenizer.tokenize("Hi 你"))  # doctest: +SKIP
            [[], [0, 1], [3], []]
        """
        _check_text(text)
        encoding = self.backend_tokenizer.encode(text, add_special_tokens=True)
        found, offsets, special = encoding.tokens, encoding.offsets, encoding.special_tokens_mask
        mapping, position = [], 0
        for token in tokens:
            try:
                j = found.index(token, position)
            except ValueError:
                mapping.append([])
                continue
            position = j + 1
            start, end = offsets[j]
            mapping.append([] if special[j] else list(range(start, end)))
        return mapping

    # ------------------------------------------------------------ chat

    def apply_chat_template(
        self,
        messages,
        add_generation_prompt=True,
        tokenize=False,
        tools=None,
        documents=None,
        chat_template=None,
        **kwargs,
    ):
        """Renders a conversation with the model's chat template, as transformers does.

        The string equals transformers'
        ``tokenizer.apply_chat_template(messages, tokenize=False, ...)``; the
        template sees ``messages``, ``tools``, ``documents``,
        ``add_generation_prompt``, the config's special tokens (``bos_token``,
        ``eos_token``, ...) and ``**kwargs``. Note the defaults differ from
        transformers': a generation prompt is added and a string returned.

        Args:
            messages: a list of ``{"role", "content"}`` dicts (see
                ``kerasformers.tokenizers.chat.normalize_messages``).
            add_generation_prompt: end with the header of an assistant turn.
            tokenize: return ids instead of the string: the string encoded
                without adding special tokens again (the template wrote them).
            tools: optional list of tool JSON schemas.
            documents: optional list of document dicts (RAG templates).
            chat_template: a template string, or the name of one of the
                model's templates; by default the model's (``"tool_use"`` when
                tools are given and it exists, else ``"default"``).
            **kwargs: more template variables (e.g. ``enable_thinking=False``).
                transformers' own options that are not variables
                (``continue_final_message``, ``return_dict``, ``padding``, ...)
                are not supported and raise ``TypeError``.

        Returns:
            The prompt string, or its list of ids with ``tokenize=True``.

        Raises:
            TypeError / ValueError: for malformed messages (naming the index
                and the missing key), tools or documents, or when no chat
                template exists (naming where it was looked for).
            kerasformers.tokenizers.chat.ChatTemplateError (a ValueError): if the
                template is invalid, breaks the sandbox or calls
                ``raise_exception`` (with its message).
        """
        unsupported = sorted(set(kwargs) & _TRANSFORMERS_ONLY)
        if unsupported:
            raise TypeError(
                f"apply_chat_template: {unsupported} are options of transformers' "
                "apply_chat_template that HFTokenizer does not support (they would otherwise "
                "reach the template as variables); pad and truncate the ids yourself"
            )
        where = self._chat_source
        if self.chat_template is None:
            config = self._config_source or os.path.join(self._folder, "tokenizer_config.json")
            where = (
                f"looked for the 'chat_template' key of {config} and for "
                f"{os.path.join(self._folder, 'chat_template.jinja')}, found neither"
            )
        name, template = _chat.select_chat_template(
            self.chat_template, chat_template, tools, source=where
        )
        variables = {**self.special_tokens_map, **kwargs}
        prompt = _chat.render_chat_template(
            template,
            messages,
            tools=tools,
            documents=documents,
            add_generation_prompt=add_generation_prompt,
            name=name,
            **variables,
        )
        if tokenize:
            return list(self.backend_tokenizer.encode(prompt, add_special_tokens=False).ids)
        return prompt

    def __repr__(self):
        model = type(self.backend_tokenizer.model).__name__
        return f"HFTokenizer({self._path!r}, model={model}, vocab_size={self._vocab_size})"
