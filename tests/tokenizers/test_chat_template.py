"""HFTokenizer.apply_chat_template against transformers' apply_chat_template.

The byte-level BPE of hf_fixtures.py is saved with a tokenizer_config.json
holding each template below; transformers loads the same folder with
AutoTokenizer.from_pretrained, and both must render the same string (and, with
tokenize=True, the same ids). The templates are written here, modelled on the
formats of Qwen2.5 (ChatML, a default system prompt, a tools block), LLaMA-3
(header ids, a date from strftime_now, a BOS the tokenizer would also add) and
a Hermes/Mistral-like one (system conditionals, a loop over tool calls, tool
messages, namespace, loop controls, {% generation %}, tojson with arguments).
"""

import datetime
import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from kerasformers.tokenizers import HFTokenizer  # noqa: E402
from kerasformers.tokenizers.chat import ChatTemplateError, render_chat_template  # noqa: E402
from tests.tokenizers import hf_fixtures as fx  # noqa: E402

tokenizers = pytest.importorskip("tokenizers")

QWEN = r"""
{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content }}
    {%- else %}
        {{- 'You are a helpful assistant, trained offline.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call these functions:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nReply with <tool_call>{\"name\": ..., \"arguments\": ...}</tool_call>."
        + "<|im_end|>\n" }}
{%- elif messages[0].role == 'system' %}
    {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
{%- else %}
    {{- '<|im_start|>system\nYou are a helpful assistant, trained offline.<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == 'user' or (message.role == 'system' and not loop.first)
           or (message.role == 'assistant' and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
    {%- elif message.role == 'assistant' %}
        {{- '<|im_start|>assistant' }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for call in message.tool_calls %}
            {%- if call.function is defined %}
                {%- set call = call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' + call.name + '", "arguments": '
                + call.arguments | tojson + '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == 'tool' %}
        {%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' + message.content + '\n</tool_response>' }}
        {%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

LLAMA3 = r"""{{- bos_token }}
{%- if date_string is not defined %}
    {%- set date_string = strftime_now("%d %b %Y") %}
{%- endif %}
{%- if messages[0].role == 'system' %}
    {%- set system_message = messages[0].content | trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{{- "Cutting Knowledge Date: December 2023\nToday Date: " + date_string + "\n\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message.role + '<|end_header_id|>\n\n'
        + message.content | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""

# Whitespace here is rendered: trim_blocks and lstrip_blocks decide every newline.
TOOLS_LOOP = r"""{%- set ns = namespace(system=none, turns=0) %}
{%- if messages[0].role == 'system' %}
    {%- set ns.system = messages[0].content %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- if ns.system is not none or tools %}
<<SYS>>
    {% if ns.system is not none %}
{{ ns.system }}
    {% endif %}
    {% if tools %}
Available tools:
        {% for tool in tools %}
{{ tool | tojson(indent=2, sort_keys=true) }}
        {% endfor %}
    {% endif %}
<</SYS>>
{% endif %}
{%- for message in loop_messages %}
    {%- if message.role not in ['user', 'assistant', 'tool'] %}
        {{- raise_exception('Unsupported role: ' + message.role) }}
    {%- endif %}
    {%- if message.role == 'user' %}
        {%- set ns.turns = ns.turns + 1 %}
[USER {{ ns.turns }}] {{ message.content }}
    {% elif message.role == 'assistant' %}
[ASSISTANT] {% generation %}
        {%- if message.content is defined %}{{ message.content }}{% endif %}
        {% if message.tool_calls is defined %}
            {% for call in message.tool_calls %}
                {% if call.type is defined and call.type != 'function' %}{% continue %}{% endif %}
<call id="{{ call.id | default('?') }}">{{ call.function | tojson(separators=(',', ':')) }}</call>
            {% endfor %}
        {% endif %}
{{ eos_token }}{% endgeneration %}

    {% elif message.role == 'tool' %}
<result of="{{ message.tool_call_id }}">{{ message.content }}</result>
    {% endif %}
{%- endfor %}
{%- if add_generation_prompt %}
[ASSISTANT]
{%- endif %}"""

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "查询城市天气 (weather of a city)",
        "parameters": {"type": "object", "required": ["city"], "properties": {
            "city": {"type": "string", "description": "城市名，如「北京」"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}}},
    {"type": "function", "function": {
        "name": "get_time", "description": "Current time <in> a \"zone\" & more",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}},
]  # fmt: skip

SIMPLE = [{"role": "user", "content": "你好！Who are you? 😀"}]
MULTI = [
    {"role": "system", "content": "  你是一个有用的助手。\nBe brief.  "},
    {"role": "user", "content": "What's 2+2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "and 3×3？ text with <|im_end|> and <|eot_id|> inside\n\n"},
]
TOOL_CALLS = [
    {"role": "user", "content": "北京天气怎么样? And the time?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": {"city": "北京", "unit": "celsius"}}},
        {"id": "call_x", "type": "retrieval", "function": {"name": "skip_me", "arguments": {}}},
        {"id": "call_2", "type": "function",
         "function": {"name": "get_time", "arguments": {"tz": "Asia/Shanghai"}}},
    ]},
    {"role": "tool", "tool_call_id": "call_1", "content": "晴, 25°C"},
    {"role": "tool", "tool_call_id": "call_2", "content": "14:05"},
    {"role": "assistant", "content": "北京今天晴，25°C，现在 14:05。"},
    {"role": "user", "content": "thanks 👍🏽"},
]  # fmt: skip
SYSTEM_TOOL_CALLS = [{"role": "system", "content": "Use tools when needed."}, *TOOL_CALLS]

CASES = {
    "qwen": (QWEN, [SIMPLE, MULTI, TOOL_CALLS, SYSTEM_TOOL_CALLS]),
    "llama3": (LLAMA3, [SIMPLE, MULTI]),
    "tools_loop": (TOOLS_LOOP, [SIMPLE, MULTI, TOOL_CALLS, SYSTEM_TOOL_CALLS]),
}
CONFIGS = {
    "qwen": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    "llama3": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "tools_loop": {"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>"},
}


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def bpe():
    return fx.train_byte_level_bpe()


def _save(tokenizer, folder, config):
    config = {"tokenizer_class": "PreTrainedTokenizerFast", **config}
    return fx.save(tokenizer, folder, config)


@pytest.fixture(scope="module")
def folders(tmp_path_factory, bpe):
    root = tmp_path_factory.mktemp("chat")
    out = {}
    for name, (template, _) in CASES.items():
        tokenizer = bpe
        if name == "llama3":  # its tokenizer adds <|begin_of_text|> too, as LLaMA-3's does
            tokenizer = tokenizers.Tokenizer.from_str(bpe.to_str())
            bos = tokenizer.token_to_id("<|begin_of_text|>")
            tokenizer.post_processor = tokenizers.processors.TemplateProcessing(
                single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B:1",
                special_tokens=[("<|begin_of_text|>", bos)],
            )  # fmt: skip
        out[name] = _save(tokenizer, root / name, {**CONFIGS[name], "chat_template": template})
    return out


@pytest.fixture(scope="module", params=list(CASES))
def case(request, folders, transformers):
    name = request.param
    hf = transformers.AutoTokenizer.from_pretrained(str(folders[name]))
    return name, HFTokenizer(folders[name]), hf


def _both(ours, hf, messages, **kwargs):
    # Our default adds the generation prompt; transformers' does not.
    kwargs.setdefault("add_generation_prompt", True)
    theirs = hf.apply_chat_template(messages, tokenize=False, **kwargs)
    return ours.apply_chat_template(messages, **kwargs), theirs


# ------------------------------------------------------------ parity


@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_rendering_equals_transformers(case, add_generation_prompt):
    name, ours, hf = case
    for messages in CASES[name][1]:
        for tools in [None, TOOLS] if name != "llama3" else [None]:
            kwargs = dict(add_generation_prompt=add_generation_prompt, tools=tools)
            if name == "llama3":
                kwargs["date_string"] = "26 Jul 2024"
            got, expected = _both(ours, hf, messages, **kwargs)
            assert got == expected, (messages, tools)
            ids = ours.apply_chat_template(messages, tokenize=True, **kwargs)
            assert ids == hf.apply_chat_template(
                messages, tokenize=True, return_dict=False, **kwargs
            )
            # Special tokens the template writes are single ids; those in messages too.
            assert ours.decode(ids, skip_special_tokens=False) == got


def test_the_templates_exercise_what_they_claim(case):
    """Guards the parity test against templates that render trivially."""
    name, ours, _ = case
    if name == "llama3":
        text = ours.apply_chat_template(MULTI, tokenize=False, date_string="26 Jul 2024")
        assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>")
        assert "你是一个有用的助手。\nBe brief.<|eot_id|>" in text  # trimmed
        ids = ours.apply_chat_template(MULTI, tokenize=True, date_string="26 Jul 2024")
        assert ids.count(ours.token_to_id("<|begin_of_text|>")) == 1  # not added twice
        assert ours.encode("x")[0][0] == ours.token_to_id("<|begin_of_text|>")
    elif name == "qwen":
        text = ours.apply_chat_template(TOOL_CALLS, tools=TOOLS)
        assert '"description": "查询城市天气 (weather of a city)"' in text  # not \u escaped
        assert '<tool_call>\n{"name": "get_time", "arguments": {"tz": "Asia/Shanghai"}}' in text
        assert text.count("<|im_start|>user\n<tool_response>") == 1  # two results, one turn
        assert ours.apply_chat_template(SIMPLE).startswith("<|im_start|>system\nYou are")
    else:
        text = ours.apply_chat_template(SYSTEM_TOOL_CALLS, tools=TOOLS, add_generation_prompt=False)
        assert '<call id="call_2">{"name":"get_time","arguments":{"tz":"Asia/Shanghai"}}' in text
        assert "skip_me" not in text  # {% continue %}
        assert '{\n  "function": {' in text  # tojson(indent=2, sort_keys=true)
        assert "[USER 2] thanks" in text and "None" not in text


def test_encode_equals_transformers(case):
    _, ours, hf = case
    for text in fx.SAMPLES:
        for add in (True, False):
            expected = hf(text, add_special_tokens=add)["input_ids"]
            assert ours.encode(text, add_special_tokens=add)[0] == expected, repr(text)


def test_named_templates_are_picked_as_transformers_picks_them(tmp_path, bpe, transformers):
    config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|im_end|>", "chat_template": [
        {"name": "default", "template": LLAMA3}, {"name": "tool_use", "template": QWEN},
        {"name": "loop", "template": TOOLS_LOOP}]}  # fmt: skip
    folder = _save(bpe, tmp_path, config)
    ours, hf = HFTokenizer(folder), transformers.AutoTokenizer.from_pretrained(str(folder))
    common = dict(date_string="1 Jan 2025")
    runs = [
        dict(),  # default
        dict(tools=TOOLS),  # tool_use
        dict(chat_template="loop"),
        dict(chat_template="loop", tools=TOOLS),
        dict(chat_template="{{ messages | length }}|{{ eos_token }}"),
    ]
    seen = set()
    for kwargs in runs:
        got, expected = _both(ours, hf, MULTI, **common, **kwargs)
        assert got == expected, kwargs
        seen.add(got)
    assert len(seen) == len(runs)
    without_default = {**config, "chat_template": config["chat_template"][1:]}
    lonely = HFTokenizer(folder, tokenizer_config=without_default)
    with pytest.raises(ValueError, match=r"several chat templates \(\['loop', 'tool_use'\]\)"):
        lonely.apply_chat_template(SIMPLE)
    assert lonely.apply_chat_template(SIMPLE, tools=TOOLS) == ours.apply_chat_template(
        SIMPLE, tools=TOOLS
    )


def test_chat_template_jinja_beside_the_tokenizer_wins(tmp_path, bpe, transformers):
    folder = _save(bpe, tmp_path, {**CONFIGS["tools_loop"], "chat_template": LLAMA3})
    (folder / "chat_template.jinja").write_text(TOOLS_LOOP, encoding="utf-8")
    ours, hf = HFTokenizer(folder), transformers.AutoTokenizer.from_pretrained(str(folder))
    got, expected = _both(ours, hf, TOOL_CALLS, tools=TOOLS)
    assert got == expected
    assert got.startswith("<<SYS>>")


def test_a_config_dict_and_extra_variables(tmp_path, bpe, folders, transformers):
    """tokenizer_config= as a dict; kwargs reach the template and beat the special tokens."""
    bare = fx.save(bpe, tmp_path / "bare")
    template = "{{ bos_token }}{{ flavour | default('plain') }}{{ messages[0].content }}{{ obj }}"
    config = {**CONFIGS["tools_loop"], "chat_template": template}
    ours = HFTokenizer(bare, tokenizer_config=config)
    hf = transformers.AutoTokenizer.from_pretrained(str(_save(bpe, tmp_path / "hf", config)))

    class Opaque:  # objects reach templates only as an inert placeholder
        def __str__(self):
            return "leaked"

    for kwargs in [{}, {"flavour": "spicy", "obj": Opaque()}, {"bos_token": "<|im_start|>"}]:
        got, expected = _both(ours, hf, SIMPLE, **kwargs)
        assert got == expected, kwargs
    assert "leaked" not in ours.apply_chat_template(SIMPLE, obj=Opaque())


def test_strftime_now_and_none_content_with_tool_calls(folders, transformers):
    hf = transformers.AutoTokenizer.from_pretrained(str(folders["llama3"]))
    ours = HFTokenizer(folders["llama3"])
    got, expected = _both(ours, hf, SIMPLE)
    assert got == expected
    assert datetime.datetime.now().strftime("%b %Y") in got
    # content=None next to tool_calls is dropped, as transformers drops None values.
    template = "{% for m in messages %}{{ m.content is defined }},{{ m | length }};{% endfor %}"
    got, expected = _both(ours, hf, TOOL_CALLS[:2], chat_template=template)
    assert got == expected == "True,2;False,2;"
    # Reasoning under any of its names reaches templates as reasoning_content and thinking.
    template = "{% for m in messages %}{{ m.reasoning_content }}/{{ m.thinking }};{% endfor %}"
    messages = [*SIMPLE, {"role": "assistant", "content": "4", "reasoning": "2+2"},
                {"role": "assistant", "content": "5", "thinking": "hmm"}]  # fmt: skip
    got, expected = _both(ours, hf, messages, chat_template=template)
    assert got == expected == "/;2+2/2+2;hmm/hmm;"


# ------------------------------------------------------------ errors


@pytest.fixture(scope="module")
def qwen(folders):
    return HFTokenizer(folders["qwen"])


@pytest.mark.parametrize(
    "messages, error, pattern",
    [
        ([{"content": "hi"}], ValueError, r"messages\[0\] has no 'role' \(keys: \['content'\]\)"),
        ([*SIMPLE, {"role": "user"}], ValueError, r"messages\[1\] \(role 'user'\) has no 'con"),
        ([{"role": "user", "content": None}], ValueError, r"messages\[0\].*'content'.*tool_calls"),
        ([{"role": "assistant", "content": None, "tool_calls": []}], ValueError, r"messages\[0\]"),
        ([{"role": 3, "content": "hi"}], TypeError, r"messages\[0\]\['role'\] must be a str"),
        ({"role": "user", "content": "hi"}, TypeError, "must be a list of message dicts, got dict"),
        ("hi", TypeError, "messages must be a list .*got str"),
        ([*SIMPLE, "hi"], TypeError, r"messages\[1\] must be a dict .*got str"),
        ([SIMPLE, SIMPLE], TypeError, r"messages\[0\] must be a dict .*batch of conversations"),
        ([], ValueError, "messages is empty"),
    ],
)  # fmt: skip
def test_malformed_messages_name_the_message_and_the_key(qwen, messages, error, pattern):
    with pytest.raises(error, match=pattern):
        qwen.apply_chat_template(messages)


def test_bad_tools_and_documents(qwen):
    with pytest.raises(TypeError, match="tools must be a list of dicts"):
        qwen.apply_chat_template(SIMPLE, tools=[len])
    with pytest.raises(TypeError, match="documents must be a list of dicts"):
        qwen.apply_chat_template(SIMPLE, documents="doc")


def test_transformers_only_options_are_refused(qwen):
    with pytest.raises(TypeError, match=r"\['continue_final_message', 'return_dict'\] are options"):
        qwen.apply_chat_template(SIMPLE, continue_final_message=True, return_dict=False)


def test_no_chat_template_says_where_it_looked(tmp_path, bpe):
    folder = fx.save(bpe, tmp_path, {"eos_token": "<|im_end|>"})
    ours = HFTokenizer(folder)
    pattern = r"no chat template: looked for the 'chat_template' key of .*tokenizer_config\.json"
    with pytest.raises(ValueError, match=pattern + r".*chat_template\.jinja"):
        ours.apply_chat_template(SIMPLE)
    bare = HFTokenizer(fx.save(bpe, tmp_path / "bare"))
    with pytest.raises(ValueError, match=r"no chat template.*bare.tokenizer_config\.json"):
        bare.apply_chat_template(SIMPLE)
    # An explicit template still works.
    assert ours.apply_chat_template(SIMPLE, chat_template="{{ eos_token }}") == "<|im_end|>"


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ messages.__class__.__init__.__globals__ }}",
        "{{ messages[0].__class__ }}",
        "{% if cycler.__init__.__globals__ %}x{% endif %}",
        "{{ raise_exception.__globals__ }}",
        "{{ messages.append({'role': 'user'}) }}",
        "{% set ns = namespace(_hidden=1) %}",
        "{{ ('%s' % messages).__class__ }}",
    ],
)
def test_unsafe_templates_are_stopped_by_the_sandbox(qwen, template):
    with pytest.raises(
        ChatTemplateError, match="the chat_template argument was stopped by the sandbox"
    ):
        qwen.apply_chat_template(SIMPLE, chat_template=template)
    # The model's own template is named as such.
    bad = HFTokenizer(qwen._folder, tokenizer_config={"chat_template": template})
    with pytest.raises(ValueError, match="chat template of the tokenizer_config dict was stopped"):
        bad.apply_chat_template(SIMPLE)


def test_raise_exception_keeps_the_templates_message(qwen, folders):
    messages = [{"role": "critic", "content": "hmm"}]
    with pytest.raises(ChatTemplateError, match="raised an exception: Unsupported role: critic"):
        render_chat_template(TOOLS_LOOP, messages, name="loop")
    ours = HFTokenizer(folders["tools_loop"])
    with pytest.raises(
        ValueError,
        match=r"of .*tools_loop.tokenizer_config\.json raised an exception: Unsupported role",
    ):
        ours.apply_chat_template(messages)


def test_invalid_and_failing_templates(qwen):
    with pytest.raises(ChatTemplateError, match=r"not a valid Jinja template \(line 2\)"):
        qwen.apply_chat_template(SIMPLE, chat_template="ok\n{% if %}")
    with pytest.raises(ChatTemplateError, match="failed: UndefinedError"):
        qwen.apply_chat_template(SIMPLE, chat_template="{{ nothing.here }}")
    with pytest.raises(TypeError, match="must be a str, got int"):
        render_chat_template(5, SIMPLE)
