"""A process that uses only Foundry Local's SDK, as another application would (no slmdeploy import).

python sdk_only.py ask CACHE MODEL_ID MAX_TOKENS   -> JSON: registered ids, the greedy answer, its finish reason
python sdk_only.py unregister CACHE MODEL_ID
"""

import json
import sys

from foundry_local_sdk import (
    CatalogType,
    ChatSession,
    Configuration,
    FoundryLocalManager,
    MessageItem,
    Request,
    RequestOptions,
    SearchOptions,
)

action, cache, model_id = sys.argv[1:4]
FoundryLocalManager.initialize(Configuration(app_name="another-app", model_cache_dir=cache))
catalog = FoundryLocalManager.instance.get_catalog(CatalogType.LOCAL)
if action == "unregister":
    catalog.unregister_model(model_id)
    sys.exit(0)
model = catalog.get_model_variant(model_id)
model.load()
with ChatSession(model) as session, Request() as request:
    session.set_options(RequestOptions(search=SearchOptions(max_output_tokens=int(sys.argv[4]), do_sample=False)))
    request.add_item(MessageItem.user("What is the capital of France?"))
    with session.process_request(request) as response:
        answer = "".join(item.get_simple_text() for item in response if item.is_simple_text())
        finish = response.finish_reason.name
ids = [registered.id for registered in catalog.list_models()]
print(json.dumps({"ids": ids, "answer": answer, "finish": finish, "slmdeploy_imported": "slmdeploy" in sys.modules}))
