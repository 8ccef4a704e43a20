//! Chat template tests.
//!
//! The templates and expected outputs marked "llama.cpp" are ported from
//! llama.cpp's `tests/test-chat-template.cpp` (MIT; ggml-org/llama.cpp,
//! `main_automated_tests`): a fixed six-message conversation rendered with
//! `add_generation_prompt = true`. Each case there has `expected_output`
//! (llama.cpp's builtin renderer) and `expected_output_jinja` (its Jinja
//! path, with the system-role polyfill; empty means "same as
//! `expected_output`"); the Jinja tests below use the Jinja expectation,
//! the builtin tests the builtin one. llama.cpp's test renders without a
//! model, so no BOS is stripped there: those cases use `adds_bos = false`.
//! The C++ string literals are copied unchanged (Rust escapes are the same).

use super::*;
use std::path::PathBuf;

fn conversation() -> Vec<Message> {
    vec![
        Message::new("system", "You are a helpful assistant"),
        Message::new("user", "Hello"),
        Message::new("assistant", "Hi there"),
        Message::new("user", "Who are you"),
        Message::new("assistant", "   I am an assistant   "),
        Message::new("user", "Another question"),
    ]
}

/// Model facts for tests: the given specials and vocabulary tokens.
struct Model {
    bos: &'static str,
    eos: &'static str,
    adds_bos: bool,
    sentencepiece: bool,
    vocab: &'static [&'static str],
}

const NO_MODEL: Model = Model {
    bos: "",
    eos: "",
    adds_bos: false,
    sentencepiece: true,
    vocab: &[],
};

impl Model {
    fn template(&self, template: Option<&str>, arch: &str) -> Result<ChatTemplate, ChatError> {
        let has = |t: &str| self.vocab.contains(&t);
        let tokens = ChatTokens {
            bos: self.bos,
            eos: self.eos,
            adds_bos: self.adds_bos,
            adds_eos: false,
            sentencepiece: self.sentencepiece,
            has_token: &has,
        };
        ChatTemplate::new(template, arch, &tokens)
    }
}

/// Renders the fixed conversation with a Jinja template, as llama.cpp's test does.
fn jinja(template: &str, bos: &'static str, eos: &'static str) -> String {
    let model = Model {
        bos,
        eos,
        ..NO_MODEL
    };
    let t = model.template(Some(template), "llama").unwrap();
    assert_eq!(t.name(), "jinja");
    t.render(&conversation(), true).unwrap()
}

/// Renders the fixed conversation with the builtin chosen for `arch` and `vocab`.
fn builtin(arch: &str, vocab: &'static [&'static str], eos: &'static str, name: &str) -> String {
    let model = Model {
        eos,
        vocab,
        ..NO_MODEL
    };
    let t = model.template(None, arch).unwrap();
    assert_eq!(t.name(), name);
    t.render(&conversation(), true).unwrap()
}

// ---- llama.cpp's templates through the Jinja engine ----

#[test]
fn llama_cpp_chatml_openhermes() {
    let t = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
    let expected = "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n<|im_start|>assistant\n   I am an assistant   <|im_end|>\n<|im_start|>user\nAnother question<|im_end|>\n<|im_start|>assistant\n";
    assert_eq!(jinja(t, "", ""), expected);
}

/// raise_exception on a system message: the polyfill merges it into the first user turn.
#[test]
fn llama_cpp_mistral_v02_polyfills_system() {
    let t = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";
    let expected = "[INST] You are a helpful assistant\nHello [/INST]Hi there</s>[INST] Who are you [/INST]   I am an assistant   </s>[INST] Another question [/INST]";
    assert_eq!(jinja(t, "", "</s>"), expected);
}

#[test]
fn llama_cpp_vigogne_llama2_style() {
    let t = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% elif true == true and not '<<SYS>>' in messages[0]['content'] %}{% set loop_messages = messages %}{% set system_message = 'Vous êtes Vigogne, un assistant IA créé par Zaion Lab. Vous suivez extrêmement bien les instructions. Aidez autant que vous le pouvez.' %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'system' %}{{ '<<SYS>>\\n' + content.strip() + '\\n<</SYS>>\\n\\n' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";
    let expected = "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST] Hi there </s>[INST] Who are you [/INST] I am an assistant </s>[INST] Another question [/INST]";
    assert_eq!(jinja(t, "", "</s>"), expected);
}

/// A BOS inside every turn stays: no model adds BOS here.
#[test]
fn llama_cpp_alphamonarch_keeps_bos_texts() {
    let t = "{% for message in messages %}{{bos_token + message['role'] + '\\n' + message['content'] + eos_token + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ bos_token + 'assistant\\n' }}{% endif %}";
    let expected = "<s>system\nYou are a helpful assistant</s>\n<s>user\nHello</s>\n<s>assistant\nHi there</s>\n<s>user\nWho are you</s>\n<s>assistant\n   I am an assistant   </s>\n<s>user\nAnother question</s>\n<s>assistant\n";
    assert_eq!(jinja(t, "<s>", "</s>"), expected);
}

const GEMMA_7B_IT: &str = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}";

#[test]
fn llama_cpp_gemma_7b_it() {
    let expected = "<start_of_turn>user\nYou are a helpful assistant\nHello<end_of_turn>\n<start_of_turn>model\nHi there<end_of_turn>\n<start_of_turn>user\nWho are you<end_of_turn>\n<start_of_turn>model\nI am an assistant<end_of_turn>\n<start_of_turn>user\nAnother question<end_of_turn>\n<start_of_turn>model\n";
    assert_eq!(jinja(GEMMA_7B_IT, "", ""), expected);
}

#[test]
fn llama_cpp_openchat_title_method() {
    let t = "{{ bos_token }}{% for message in messages %}{{ 'GPT4 Correct ' + message['role'].title() + ': ' + message['content'] + '<|end_of_turn|>'}}{% endfor %}{% if add_generation_prompt %}{{ 'GPT4 Correct Assistant:' }}{% endif %}";
    let expected = "GPT4 Correct System: You are a helpful assistant<|end_of_turn|>GPT4 Correct User: Hello<|end_of_turn|>GPT4 Correct Assistant: Hi there<|end_of_turn|>GPT4 Correct User: Who are you<|end_of_turn|>GPT4 Correct Assistant:    I am an assistant   <|end_of_turn|>GPT4 Correct User: Another question<|end_of_turn|>GPT4 Correct Assistant:";
    assert_eq!(jinja(t, "", ""), expected);
}

/// namespace(), `is defined`, and trim_blocks/lstrip_blocks on a multi-line template.
#[test]
fn llama_cpp_deepseek_coder_namespace_and_trim_blocks() {
    let t = "{% if not add_generation_prompt is defined %}\n{% set add_generation_prompt = false %}\n{% endif %}\n{%- set ns = namespace(found=false) -%}\n{%- for message in messages -%}\n    {%- if message['role'] == 'system' -%}\n        {%- set ns.found = true -%}\n    {%- endif -%}\n{%- endfor -%}\n{{bos_token}}{%- if not ns.found -%}\n{{'You are an AI programming assistant, utilizing the Deepseek Coder model, developed by Deepseek Company, and you only answer questions related to computer science. For politically sensitive questions, security and privacy issues, and other non-computer science questions, you will refuse to answer\\n'}}\n{%- endif %}\n{%- for message in messages %}\n    {%- if message['role'] == 'system' %}\n{{ message['content'] }}\n    {%- else %}\n        {%- if message['role'] == 'user' %}\n{{'### Instruction:\\n' + message['content'] + '\\n'}}\n        {%- else %}\n{{'### Response:\\n' + message['content'] + '\\n<|EOT|>\\n'}}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n{% if add_generation_prompt %}\n{{'### Response:'}}\n{% endif %}";
    let expected = "You are a helpful assistant### Instruction:\nHello\n### Response:\nHi there\n<|EOT|>\n### Instruction:\nWho are you\n### Response:\n   I am an assistant   \n<|EOT|>\n### Instruction:\nAnother question\n### Response:\n";
    assert_eq!(jinja(t, "", ""), expected);
}

const COMMAND_R: &str = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% elif false == true %}{% set loop_messages = messages %}{% set system_message = 'You are Command-R, a brilliant, sophisticated, AI-assistant trained to assist human users by providing thorough responses. You are trained by Cohere.' %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% if system_message != false %}{{ '<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>' + system_message + '<|END_OF_TURN_TOKEN|>' }}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% set content = message['content'] %}{% if message['role'] == 'user' %}{{ '<|START_OF_TURN_TOKEN|><|USER_TOKEN|>' + content.strip() + '<|END_OF_TURN_TOKEN|>' }}{% elif message['role'] == 'assistant' %}{{ '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>'  + content.strip() + '<|END_OF_TURN_TOKEN|>' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>' }}{% endif %}";
const COMMAND_R_EXPECTED: &str = "<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>You are a helpful assistant<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Hello<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>Hi there<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Who are you<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>I am an assistant<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|USER_TOKEN|>Another question<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>";

#[test]
fn llama_cpp_command_r_plus() {
    assert_eq!(jinja(COMMAND_R, "", ""), COMMAND_R_EXPECTED);
}

const LLAMA3: &str = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}";
const LLAMA3_EXPECTED: &str = "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWho are you<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nI am an assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nAnother question<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";

#[test]
fn llama_cpp_llama3() {
    assert_eq!(jinja(LLAMA3, "", ""), LLAMA3_EXPECTED);
}

/// Phi-3-mini ignores system messages: the polyfill moves them into the first user turn.
#[test]
fn llama_cpp_phi3_mini_polyfills_ignored_system() {
    let t = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') %}{{'<|user|>' + '\n' + message['content'] + '<|end|>' + '\n' + '<|assistant|>' + '\n'}}{% elif (message['role'] == 'assistant') %}{{message['content'] + '<|end|>' + '\n'}}{% endif %}{% endfor %}";
    let expected = "<|user|>\nYou are a helpful assistant\nHello<|end|>\n<|assistant|>\nHi there<|end|>\n<|user|>\nWho are you<|end|>\n<|assistant|>\n   I am an assistant   <|end|>\n<|user|>\nAnother question<|end|>\n<|assistant|>\n";
    assert_eq!(jinja(t, "", ""), expected);
}

const PHI3_EXPECTED: &str = "<|system|>\nYou are a helpful assistant<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\nHi there<|end|>\n<|user|>\nWho are you<|end|>\n<|assistant|>\n   I am an assistant   <|end|>\n<|user|>\nAnother question<|end|>\n<|assistant|>\n";

#[test]
fn llama_cpp_phi3_small() {
    let t = "{{ bos_token }}{% for message in messages %}{{'<|' + message['role'] + '|>' + '\n' + message['content'] + '<|end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}";
    assert_eq!(jinja(t, "", ""), PHI3_EXPECTED);
}

/// namespace() with attributes set later, selectattr, `is not none`, and the
/// system prompt placed on the last user turn by the template itself.
#[test]
fn llama_cpp_mistral_large_v3() {
    let t = "{%- if messages[0][\"role\"] == \"system\" %}\n    {%- set system_message = messages[0][\"content\"] %}\n    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n{%- endif %}\n{%- if not tools is defined %}\n    {%- set tools = none %}\n{%- endif %}\n{%- set user_messages = loop_messages | selectattr(\"role\", \"equalto\", \"user\") | list %}\n\n{#- This block checks for alternating user/assistant messages, skipping tool calling messages #}\n{%- set ns = namespace() %}\n{%- set ns.index = 0 %}\n{%- for message in loop_messages %}\n    {%- if not (message.role == \"tool\" or message.role == \"tool_results\" or (message.tool_calls is defined and message.tool_calls is not none)) %}\n        {%- if (message[\"role\"] == \"user\") != (ns.index % 2 == 0) %}\n            {{- raise_exception(\"After the optional system message, conversation roles must alternate user/assistant/user/assistant/...\") }}\n        {%- endif %}\n        {%- set ns.index = ns.index + 1 %}\n    {%- endif %}\n{%- endfor %}\n\n{{- bos_token }}\n{%- for message in loop_messages %}\n    {%- if message[\"role\"] == \"user\" %}\n        {%- if tools is not none and (message == user_messages[-1]) %}\n            {{- \"[AVAILABLE_TOOLS] [\" }}\n            {%- for tool in tools %}\n                {%- set tool = tool.function %}\n                {{- '{\"type\": \"function\", \"function\": {' }}\n                {%- for key, val in tool.items() if key != \"return\" %}\n                    {%- if val is string %}\n                        {{- '\"' + key + '\": \"' + val + '\"' }}\n                    {%- else %}\n                        {{- '\"' + key + '\": ' + val|tojson }}\n                    {%- endif %}\n                    {%- if not loop.last %}\n                        {{- \", \" }}\n                    {%- endif %}\n                {%- endfor %}\n                {{- \"}}\" }}\n                {%- if not loop.last %}\n                    {{- \", \" }}\n                {%- else %}\n                    {{- \"]\" }}\n                {%- endif %}\n            {%- endfor %}\n            {{- \"[/AVAILABLE_TOOLS]\" }}\n            {%- endif %}\n        {%- if loop.last and system_message is defined %}\n            {{- \"[INST] \" + system_message + \"\\n\\n\" + message[\"content\"] + \"[/INST]\" }}\n        {%- else %}\n            {{- \"[INST] \" + message[\"content\"] + \"[/INST]\" }}\n        {%- endif %}\n    {%- elif message.tool_calls is defined and message.tool_calls is not none %}\n        {{- \"[TOOL_CALLS] [\" }}\n        {%- for tool_call in message.tool_calls %}\n            {%- set out = tool_call.function|tojson %}\n            {{- out[:-1] }}\n            {%- if not tool_call.id is defined or tool_call.id|length != 9 %}\n                {{- raise_exception(\"Tool call IDs should be alphanumeric strings with length 9!\") }}\n            {%- endif %}\n            {{- ', \"id\": \"' + tool_call.id + '\"}' }}\n            {%- if not loop.last %}\n                {{- \", \" }}\n            {%- else %}\n                {{- \"]\" + eos_token }}\n            {%- endif %}\n        {%- endfor %}\n    {%- elif message[\"role\"] == \"assistant\" %}\n        {{- \" \" + message[\"content\"]|trim + eos_token}}\n    {%- elif message[\"role\"] == \"tool_results\" or message[\"role\"] == \"tool\" %}\n        {%- if message.content is defined and message.content.content is defined %}\n            {%- set content = message.content.content %}\n        {%- else %}\n            {%- set content = message.content %}\n        {%- endif %}\n        {{- '[TOOL_RESULTS] {\"content\": ' + content|string + \", \" }}\n        {%- if not message.tool_call_id is defined or message.tool_call_id|length != 9 %}\n            {{- raise_exception(\"Tool call IDs should be alphanumeric strings with length 9!\") }}\n        {%- endif %}\n        {{- '\"call_id\": \"' + message.tool_call_id + '\"}[/TOOL_RESULTS]' }}\n    {%- else %}\n        {{- raise_exception(\"Only user and assistant roles are supported, with the exception of an initial optional system message!\") }}\n    {%- endif %}\n{%- endfor %}\n";
    let expected = "[INST] Hello[/INST] Hi there</s>[INST] Who are you[/INST] I am an assistant</s>[INST] You are a helpful assistant\n\nAnother question[/INST]";
    assert_eq!(jinja(t, "", "</s>"), expected);
}

const MISTRAL_V7_EXPECTED: &str = "[SYSTEM_PROMPT] You are a helpful assistant[/SYSTEM_PROMPT][INST] Hello[/INST] Hi there</s>[INST] Who are you[/INST]    I am an assistant   </s>[INST] Another question[/INST]";

#[test]
fn llama_cpp_mistral_large_v7() {
    let t = "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + '[/INST]' }}{% elif message['role'] == 'system' %}{{ '[SYSTEM_PROMPT] ' + message['content'] + '[/SYSTEM_PROMPT]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token }}{% else %}{{ raise_exception('Only user, system and assistant roles are supported!') }}{% endif %}{% endfor %}";
    assert_eq!(jinja(t, "", "</s>"), MISTRAL_V7_EXPECTED);
}

#[test]
fn llama_cpp_granite_3_loop_last() {
    let t = "{%- if tools %}\n    {{- '<|start_of_role|>available_tools<|end_of_role|>\n' }}\n    {%- for tool in tools %}\n    {{- tool | tojson(indent=4) }}\n    {%- if not loop.last %}\n        {{- '\n\n' }}\n    {%- endif %}\n    {%- endfor %}\n    {{- '<|end_of_text|>\n' }}\n{%- endif %}\n{%- for message in messages %}\n    {%- if message['role'] == 'system' %}\n    {{- '<|start_of_role|>system<|end_of_role|>' + message['content'] + '<|end_of_text|>\n' }}\n    {%- elif message['role'] == 'user' %}\n    {{- '<|start_of_role|>user<|end_of_role|>' + message['content'] + '<|end_of_text|>\n' }}\n    {%- elif message['role'] == 'assistant' %}\n    {{- '<|start_of_role|>assistant<|end_of_role|>'  + message['content'] + '<|end_of_text|>\n' }}\n    {%- elif message['role'] == 'assistant_tool_call' %}\n    {{- '<|start_of_role|>assistant<|end_of_role|><|tool_call|>' + message['content'] + '<|end_of_text|>\n' }}\n    {%- elif message['role'] == 'tool_response' %}\n    {{- '<|start_of_role|>tool_response<|end_of_role|>' + message['content'] + '<|end_of_text|>\n' }}\n    {%- endif %}\n    {%- if loop.last and add_generation_prompt %}\n    {{- '<|start_of_role|>assistant<|end_of_role|>' }}\n    {%- endif %}\n{%- endfor %}";
    let expected = "<|start_of_role|>system<|end_of_role|>You are a helpful assistant<|end_of_text|>\n<|start_of_role|>user<|end_of_role|>Hello<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|>Hi there<|end_of_text|>\n<|start_of_role|>user<|end_of_role|>Who are you<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|>   I am an assistant   <|end_of_text|>\n<|start_of_role|>user<|end_of_role|>Another question<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|>";
    assert_eq!(jinja(t, "", ""), expected);
}

/// OpenAI's `tools` list reaches a template that reads `tools`, with its
/// keys in the client's order (Python's `json.dumps(indent=4)` layout);
/// templates and builtins that do not read it say so.
#[test]
fn tools_reach_templates_that_render_them() {
    let granite = "{%- if tools %}{{- '<|start_of_role|>available_tools<|end_of_role|>\n' }}\
        {%- for tool in tools %}{{- tool | tojson(indent=4) }}{%- endfor %}\
        {{- '<|end_of_text|>\n' }}{%- endif %}\
        {%- for message in messages %}{{- message['role'] + ': ' + message['content'] + '\n' }}{%- endfor %}";
    let template = NO_MODEL.template(Some(granite), "granite").unwrap();
    assert!(template.renders_tools());
    let tools: serde_json::Value = serde_json::from_str(
        r#"[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]"#,
    )
    .unwrap();
    let messages = [Message::new("user", "Weather?")];
    let with = template
        .render_with_tools(&messages, false, Some(&tools))
        .unwrap();
    assert_eq!(
        with,
        "<|start_of_role|>available_tools<|end_of_role|>\n{\n    \"type\": \"function\",\n    \
         \"function\": {\n        \"name\": \"get_weather\",\n        \"parameters\": {\n            \
         \"type\": \"object\"\n        }\n    }\n}<|end_of_text|>\nuser: Weather?\n"
    );
    // Without tools, `tools` stays undefined, as templates expect.
    assert_eq!(
        template.render(&messages, false).unwrap(),
        "user: Weather?\n"
    );
    let plain = NO_MODEL.template(Some("{{ messages[0]['content'] }}"), "llama");
    assert!(!plain.unwrap().renders_tools());
    assert!(!NO_MODEL.template(None, "qwen2").unwrap().renders_tools());
}

/// Macros, a dict literal, attribute access on dicts, and the system polyfill.
#[test]
fn llama_cpp_yandexgpt_macros() {
    let t = "<s>{%- set names = {'assistant': ' Ассистент:', 'user': ' Пользователь:'} %}\n{%- set tools_prefix = 'Тебе доступны следующие функции:' %}\n{%- macro __render_tool(tool) %}\n    {%- set name = tool.function.name %}\n    {%- set description = tool.function.description|default('') %}\n    {%- set parameters = tool.function.parameters|tojson %}\n    {{- '\\n' }}function {{ '{' }}'name':'{{ name }}',\n    {%- if tool.function.description %}'description':'{{ description }}',{% endif %}\n'parameters':{{ parameters }}\n    {{- '}' }}\n{%- endmacro %}\n{%- macro __render_tools(tools) %}\n    {{- tools_prefix }}\n    {%- for tool in tools %}\n        {{- __render_tool(tool) }}\n    {%- endfor %}\n    {{- '\\n\\n' }}\n{%- endmacro %}\n{%- macro __render_tool_message(message) %}\n    {{- '\\n\\nРезультат вызова' }} {{ message.name }}: {{ message.content }} {{ '\\n\\n' }}\n{%- endmacro %}\n{%- if tools -%}\n    {{- __render_tools(tools) }}\n{%- endif -%}\n{%- macro __render_user_message(message) %}\n{{ names.user }} {{ message.content + '\\n\\n' }}\n{%- endmacro %}\n{%- macro __render_assistant_message(message) %}\n    {{- names.assistant }}\n    {%- set call = message['function_call'] %}\n    {%- if call %}\n        {{- '\\n[TOOL_CALL_START]' }}{{ call.name }}{{ '\\n' }}{{ call.arguments|tojson }}\n    {%- else %}\n        {{- ' ' + message.content + '\\n\\n' }}\n    {%- endif %}\n{%- endmacro %}\n{%- if not add_generation_prompt is defined %}\n{%- set add_generation_prompt = false %}\n{%- endif %}\n{%- for message in messages %}\n    {%- if message['role'] == 'user' %}\n        {{- __render_user_message(message) }}\n    {%- endif %}\n    {%- if message.role == 'assistant' and not loop.last %}\n        {{- __render_assistant_message(message) }}\n    {%- endif %}\n    {%- if message.role == 'tool' %}\n        {{- __render_tool_message(message) }}\n    {%- endif %}\n    {%- if loop.last %}\n        {{- ' Ассистент:[SEP]' }}\n    {%- endif %}\n{%- endfor %}\n";
    let expected = "<s> Пользователь: You are a helpful assistant\nHello\n\n Ассистент: Hi there\n\n Пользователь: Who are you\n\n Ассистент:    I am an assistant   \n\n Пользователь: Another question\n\n Ассистент:[SEP]";
    assert_eq!(jinja(t, "<s>", ""), expected);
}

#[test]
fn llama_cpp_ling_lite_filters() {
    let t = "{% for message in messages %}{% set role = message['role'] | lower %}{% if role == 'user' %}{% set role = 'HUMAN' %}{% endif %}{% set role = role | upper %}{{ '<role>' + role + '</role>' + message['content'] }}{% endfor %}{% if add_generation_prompt %}{{ '<role>ASSISTANT</role>' }}{% endif %}";
    let expected = "<role>SYSTEM</role>You are a helpful assistant<role>HUMAN</role>Hello<role>ASSISTANT</role>Hi there<role>HUMAN</role>Who are you<role>ASSISTANT</role>   I am an assistant   <role>HUMAN</role>Another question<role>ASSISTANT</role>";
    assert_eq!(jinja(t, "", ""), expected);
}

#[test]
fn llama_cpp_seed_oss_in_list_and_filter_chain() {
    let t = "{# <seed:bos> #}{%- for message in messages %}{%- if message.role in [\"user\", \"system\"] %}{{ bos_token + message.role + \"\\n\" + message.content + eos_token }}{%- elif message.role == \"assistant\" %}{{ bos_token + message.role }}{%- if message.content is defined and message.content is string and message.content|trim|length > 0 %}{{ \"\\n\" + message.content|trim + eos_token }}{%- endif %}{%- else %}{{ bos_token + message.role + \"\\n\" + message.content + eos_token }}{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{ bos_token + \"assistant\\n\" }}{%- endif %}";
    let expected = "<seed:bos>system\nYou are a helpful assistant<seed:eos><seed:bos>user\nHello<seed:eos><seed:bos>assistant\nHi there<seed:eos><seed:bos>user\nWho are you<seed:eos><seed:bos>assistant\nI am an assistant<seed:eos><seed:bos>user\nAnother question<seed:eos><seed:bos>assistant\n";
    assert_eq!(jinja(t, "<seed:bos>", "<seed:eos>"), expected);
}

#[test]
fn llama_cpp_deepseek_v2_unicode_eos() {
    let t = "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\n\n' }}{% elif message['role'] == 'assistant' %}{{ 'Assistant: ' + message['content'] + eos_token }}{% elif message['role'] == 'system' %}{{ message['content'] + '\n\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}";
    let expected = "You are a helpful assistant\n\nUser: Hello\n\nAssistant: Hi there<｜end▁of▁sentence｜>User: Who are you\n\nAssistant:    I am an assistant   <｜end▁of▁sentence｜>User: Another question\n\nAssistant:";
    assert_eq!(jinja(t, "", "<｜end▁of▁sentence｜>"), expected);
}

#[test]
fn llama_cpp_minicpm_strip_method() {
    let t = "{% for message in messages %}{% if message['role'] == 'user' %}{{'<用户>' + message['content'].strip() + '<AI>'}}{% else %}{{message['content'].strip()}}{% endif %}{% endfor %}";
    let expected = "You are a helpful assistant<用户>Hello<AI>Hi there<用户>Who are you<AI>I am an assistant<用户>Another question<AI>";
    assert_eq!(jinja(t, "", ""), expected);
}

// ---- builtins against llama.cpp's builtin outputs ----

#[test]
fn builtin_chatml_matches_llama_cpp() {
    let expected = "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n<|im_start|>assistant\n   I am an assistant   <|im_end|>\n<|im_start|>user\nAnother question<|im_end|>\n<|im_start|>assistant\n";
    assert_eq!(builtin("qwen2", &["<|im_start|>"], "", "chatml"), expected);
}

#[test]
fn builtin_gemma_matches_llama_cpp() {
    // llama.cpp's expected_output for google/gemma-7b-it (its builtin).
    let expected = "<start_of_turn>user\nYou are a helpful assistant\n\nHello<end_of_turn>\n<start_of_turn>model\nHi there<end_of_turn>\n<start_of_turn>user\nWho are you<end_of_turn>\n<start_of_turn>model\nI am an assistant<end_of_turn>\n<start_of_turn>user\nAnother question<end_of_turn>\n<start_of_turn>model\n";
    for arch in ["gemma", "gemma2", "gemma3"] {
        assert_eq!(builtin(arch, &[], "", "gemma-turns"), expected);
    }
}

#[test]
fn builtin_llama3_matches_llama_cpp() {
    let vocab = &["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"];
    assert_eq!(
        builtin("llama", vocab, "", "llama3-headers"),
        LLAMA3_EXPECTED
    );
}

#[test]
fn builtin_phi3_matches_llama_cpp() {
    assert_eq!(builtin("phi3", &[], "", "phi3"), PHI3_EXPECTED);
    assert_eq!(builtin("other", &["<|user|>"], "", "phi3"), PHI3_EXPECTED);
}

#[test]
fn builtin_mistral_v7_matches_llama_cpp() {
    let vocab = &["[INST]", "[/INST]", "[SYSTEM_PROMPT]"];
    assert_eq!(
        builtin("llama", vocab, "</s>", "mistral-inst"),
        MISTRAL_V7_EXPECTED
    );
}

#[test]
fn builtin_mistral_v3_and_tekken_match_llama_cpp() {
    // expected_output of the Mistral-Large-2407 and Mistral-Nemo-2407 cases.
    let v3 = "[INST] You are a helpful assistant\n\nHello[/INST] Hi there</s>[INST] Who are you[/INST] I am an assistant</s>[INST] Another question[/INST]";
    let tekken = "[INST]You are a helpful assistant\n\nHello[/INST]Hi there</s>[INST]Who are you[/INST]   I am an assistant   </s>[INST]Another question[/INST]";
    let vocab = &["[INST]", "[/INST]"];
    assert_eq!(builtin("llama", vocab, "</s>", "mistral-inst"), v3);
    let model = Model {
        eos: "</s>",
        sentencepiece: false,
        vocab,
        ..NO_MODEL
    };
    let t = model.template(None, "llama").unwrap();
    assert_eq!(t.render(&conversation(), true).unwrap(), tekken);
}

/// llama2-inst is the Llama 2 chat template: with an empty BOS it equals
/// llama.cpp's Jinja expectation for vigogne (a copy of that template
/// writing BOS once); with a BOS, every later `[INST]` gets one.
#[test]
fn builtin_llama2_matches_llama2_chat_template() {
    let expected = "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST] Hi there </s>[INST] Who are you [/INST] I am an assistant </s>[INST] Another question [/INST]";
    assert_eq!(builtin("llama", &[], "</s>", "llama2-inst"), expected);
    let model = Model {
        bos: "<s>",
        eos: "</s>",
        adds_bos: true,
        ..NO_MODEL
    };
    let t = model.template(None, "llama").unwrap();
    let with_bos = expected.replace("</s>[INST]", "</s><s>[INST]");
    assert_eq!(t.render(&conversation(), true).unwrap(), with_bos);
}

#[test]
fn builtin_plain_transcript() {
    let out = builtin("bert", &[], "", "plain");
    assert_eq!(
        out,
        "System: You are a helpful assistant\nUser: Hello\nAssistant: Hi there\nUser: Who are you\nAssistant:    I am an assistant   \nUser: Another question\nAssistant:"
    );
}

#[test]
fn fallback_selection_order() {
    let pick = |arch: &str, vocab: &'static [&'static str]| {
        let model = Model { vocab, ..NO_MODEL };
        model.template(None, arch).unwrap().name().to_owned()
    };
    assert_eq!(pick("gemma3", &["<|im_start|>"]), "gemma-turns");
    assert_eq!(pick("llama", &["<start_of_turn>"]), "gemma-turns");
    assert_eq!(pick("qwen3", &["<|im_start|>", "<|user|>"]), "chatml");
    assert_eq!(pick("llama", &["<|start_header_id|>"]), "llama3-headers");
    assert_eq!(
        pick("llama", &["[INST]", "[SYSTEM_PROMPT]"]),
        "mistral-inst"
    );
    assert_eq!(pick("mistral3", &["[INST]"]), "mistral-inst");
    assert_eq!(pick("phi3", &[]), "phi3");
    assert_eq!(pick("llama", &[]), "llama2-inst");
    assert_eq!(pick("gpt2", &[]), "plain");
    assert_eq!(pick("", &[]), "plain");
}

#[test]
fn builtin_names_select_builtins_and_empty_template_falls_back() {
    for name in [
        "gemma-turns",
        "chatml",
        "llama2-inst",
        "llama3-headers",
        "mistral-inst",
        "phi3",
        "plain",
    ] {
        assert_eq!(NO_MODEL.template(Some(name), "gpt2").unwrap().name(), name);
    }
    let t = NO_MODEL.template(Some("  \n"), "gemma").unwrap();
    assert_eq!(t.name(), "gemma-turns");
}

// ---- Gemma: builtin vs. the official template ----

/// Gemma 3's `chat_template` (google/gemma-3-*-it tokenizer_config.json).
const GEMMA3_TEMPLATE: &str = "{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = \"\" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = \"model\" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception(\"Invalid content type\") }}
    {%- endif -%}
    {{ '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\\n'}}
{%- endif -%}
";

#[test]
fn gemma_builtin_equals_official_gemma3_template() {
    let model = Model {
        bos: "<bos>",
        eos: "<eos>",
        adds_bos: true,
        vocab: &["<start_of_turn>", "<end_of_turn>"],
        ..NO_MODEL
    };
    let official = model.template(Some(GEMMA3_TEMPLATE), "gemma3").unwrap();
    let builtin = model.template(None, "gemma3").unwrap();
    assert_eq!((official.name(), builtin.name()), ("jinja", "gemma-turns"));
    let short = [Message::new("user", "Hi")];
    let no_system = &conversation()[1..];
    for (messages, prompt) in [
        (&conversation()[..], true),
        (&conversation()[..], false),
        (no_system, true),
        (&short[..], true),
    ] {
        let a = official.render(messages, prompt).unwrap();
        assert_eq!(a, builtin.render(messages, prompt).unwrap());
        assert!(
            !a.starts_with("<bos>"),
            "BOS is left to the tokenizer: {a:?}"
        );
    }
    // Without auto-BOS, the template's BOS text stays for special parsing.
    let no_auto = Model {
        adds_bos: false,
        ..model
    };
    let out = no_auto.template(Some(GEMMA3_TEMPLATE), "gemma3").unwrap();
    assert!(
        out.render(&short, true)
            .unwrap()
            .starts_with("<bos><start_of_turn>user\nHi")
    );
}

// ---- errors and engine features ----

#[test]
fn syntax_error_is_reported_at_load() {
    let err = NO_MODEL
        .template(Some("{% for m in messages %}{{ m.content }}"), "llama")
        .unwrap_err();
    assert!(matches!(err, ChatError::Syntax(_)), "{err:?}");
    let err = NO_MODEL
        .template(Some("{{ messages[ }}"), "llama")
        .unwrap_err();
    assert!(err.to_string().contains("does not parse"), "{err}");
}

#[test]
fn raise_exception_names_the_message() {
    // Gemma 7B's template refuses non-alternating roles.
    let t = NO_MODEL.template(Some(GEMMA_7B_IT), "gemma").unwrap();
    let messages = [Message::new("user", "a"), Message::new("user", "b")];
    let err = t.render(&messages, true).unwrap_err();
    assert_eq!(
        err,
        ChatError::Raised(
            "Conversation roles must alternate user/assistant/user/assistant/...".into()
        )
    );
    assert!(err.to_string().contains("roles must alternate"));
}

#[test]
fn render_errors_are_errors_not_panics() {
    let t = NO_MODEL
        .template(Some("{{ messages[0].content + 1 }}"), "llama")
        .unwrap();
    assert!(matches!(
        t.render(&conversation(), true),
        Err(ChatError::Render(_))
    ));
    // A runaway loop runs out of fuel instead of hanging.
    let t = NO_MODEL
        .template(
            Some(
                "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            ),
            "llama",
        )
        .unwrap();
    assert!(t.render(&conversation(), true).is_err());
    // No messages at all.
    let t = NO_MODEL.template(Some(COMMAND_R), "command-r").unwrap();
    assert!(t.render(&[], true).is_err());
}

#[test]
fn tojson_is_python_json_dumps() {
    let render = |src: &str| {
        NO_MODEL
            .template(Some(src), "llama")
            .unwrap()
            .render(&[Message::new("user", "a\"<b>\n")], false)
            .unwrap()
    };
    assert_eq!(
        render("{{ messages | tojson }}"),
        r#"[{"role": "user", "content": "a\"<b>\n"}]"#
    );
    assert_eq!(
        render("{{ {'b': [1, 2.0, none, true], 'a': {}} | tojson(indent=2) }}"),
        "{\n  \"b\": [\n    1,\n    2.0,\n    null,\n    true\n  ],\n  \"a\": {}\n}"
    );
    assert_eq!(
        render("{{ {'b': 1, 'a': 'é'} | tojson(sort_keys=true, separators=[',', ':']) }}"),
        r#"{"a":"é","b":1}"#
    );
    assert_eq!(
        render("{{ 'é' | tojson(ensure_ascii=true) }}"),
        r#""\u00e9""#
    );
}

#[test]
fn python_methods_and_strftime_now() {
    let src = "{{ messages[0].content.strip().split(',') | join('|') }} {{ 'ab'.startswith('a') }} {{ 'x y'.title() }} {{ strftime_now('%Y') | length }}";
    let t = NO_MODEL.template(Some(src), "llama").unwrap();
    let out = t.render(&[Message::new("user", "  a,b ")], false).unwrap();
    assert_eq!(out, "a|b True X Y 4");
    // A bad strftime format is a render error, not a panic.
    let t = NO_MODEL
        .template(Some("{{ strftime_now('%Q') }}"), "llama")
        .unwrap();
    assert!(t.render(&[], false).is_err());
}

#[test]
fn loop_controls_and_trailing_newline() {
    let src = "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.content }}\n{% endfor %}\n";
    let t = NO_MODEL.template(Some(src), "llama").unwrap();
    assert_eq!(
        t.render(&conversation(), false).unwrap(),
        "You are a helpful assistant\n"
    );
}

// ---- templates shipped in real GGUF files ----

fn manifest_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A vocabulary from ../shared/vocab (llama.cpp's ggml-vocab files), or None
/// outside CI when ../shared is missing.
fn shared_vocab(name: &str) -> Option<PathBuf> {
    let path = manifest_path("../shared/vocab").join(name);
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI runs with ../shared beside the project, but {} is missing",
        path.display()
    );
    eprintln!("skipping: {} not present", path.display());
    None
}

fn from_file(path: &std::path::Path) -> ChatTemplate {
    let file = GgufFile::open(path).unwrap();
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    ChatTemplate::from_gguf(&file, &tokenizer).unwrap()
}

#[test]
fn gguf_phi3_template() {
    // tests/data/vocab/ggml-vocab-phi-3.gguf carries Phi-3-mini's template,
    // which drops system messages (polyfilled) and starts with BOS (stripped:
    // the Phi-3 tokenizer adds it).
    let t = from_file(&manifest_path("tests/data/vocab/ggml-vocab-phi-3.gguf"));
    assert_eq!(t.name(), "jinja");
    let expected = "<|user|>\nYou are a helpful assistant\nHello<|end|>\n<|assistant|>\nHi there<|end|>\n<|user|>\nWho are you<|end|>\n<|assistant|>\n   I am an assistant   <|end|>\n<|user|>\nAnother question<|end|>\n<|assistant|>\n";
    assert_eq!(t.render(&conversation(), true).unwrap(), expected);
}

#[test]
fn gguf_qwen2_template() {
    for name in ["ggml-vocab-qwen2.gguf", "ggml-vocab-qwen35.gguf"] {
        let Some(path) = shared_vocab(name) else {
            return;
        };
        let t = from_file(&path);
        assert_eq!(t.name(), "jinja");
        let expected = "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n<|im_start|>assistant\n   I am an assistant   <|im_end|>\n<|im_start|>user\nAnother question<|im_end|>\n<|im_start|>assistant\n";
        assert_eq!(t.render(&conversation(), true).unwrap(), expected);
        // Qwen's template adds a default system turn when there is none.
        let out = t.render(&[Message::new("user", "Hi")], true).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }
}

#[test]
fn gguf_command_r_template() {
    let Some(path) = shared_vocab("ggml-vocab-command-r.gguf") else {
        return;
    };
    let t = from_file(&path);
    assert_eq!(t.name(), "jinja");
    assert_eq!(t.render(&conversation(), true).unwrap(), COMMAND_R_EXPECTED);
}

/// Gemma 4's template (macros, namespaces, dictsort; ~12 KB). The expected
/// text is derived by reading the template, not taken from llama.cpp.
#[test]
fn gguf_gemma4_template() {
    let Some(path) = shared_vocab("ggml-vocab-gemma-4.gguf") else {
        return;
    };
    let t = from_file(&path);
    assert_eq!(t.name(), "jinja");
    let expected = "<|turn>system\nYou are a helpful assistant<turn|>\n<|turn>user\nHello<turn|>\n<|turn>model\nHi there<turn|>\n<|turn>user\nWho are you<turn|>\n<|turn>model\nI am an assistant<turn|>\n<|turn>user\nAnother question<turn|>\n<|turn>model\n<|channel>thought\n<channel|>";
    let out = t.render(&conversation(), true).unwrap();
    assert_eq!(out.strip_prefix("<bos>").unwrap_or(&out), expected);
    // A long conversation stays within the render's fuel.
    let long: Vec<Message> = (0..2000)
        .map(|i| Message::new(["user", "assistant"][i % 2], "Some words of a turn."))
        .collect();
    assert!(t.render(&long, true).is_ok());
}

#[test]
fn gguf_without_template_uses_builtin() {
    let gemma = from_file(&manifest_path("tests/data/tiny-gemma-Q4_K_M.gguf"));
    assert_eq!(gemma.name(), "gemma-turns");
    let out = gemma.render(&conversation()[..2], true).unwrap();
    assert_eq!(
        out,
        "<start_of_turn>user\nYou are a helpful assistant\n\nHello<end_of_turn>\n<start_of_turn>model\n"
    );
    let llama = from_file(&manifest_path("tests/data/tiny-llama-Q4_K_M.gguf"));
    assert_eq!(llama.name(), "llama2-inst");
}

#[test]
fn hostile_templates_fail_cleanly() {
    // Deep nesting is refused by the parser instead of overflowing the stack.
    let deep = format!("{{{{ {}1{} }}}}", "(".repeat(100_000), ")".repeat(100_000));
    assert!(matches!(
        NO_MODEL.template(Some(&deep), "llama"),
        Err(ChatError::Syntax(_))
    ));
    // Unbounded macro recursion hits the recursion limit.
    let src = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}";
    let t = NO_MODEL.template(Some(src), "llama").unwrap();
    assert!(t.render(&conversation(), true).is_err());
    // A self-containing namespace cannot hang tojson.
    let src = "{% set ns = namespace(a=1) %}{% set ns.me = ns %}{{ ns | tojson }}";
    let t = NO_MODEL.template(Some(src), "llama").unwrap();
    assert!(t.render(&conversation(), true).is_err());
}

#[test]
fn templates_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ChatTemplate>();
}
