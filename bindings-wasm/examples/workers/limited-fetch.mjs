// A Cloudflare Worker whose outgoing fetches go through traffic-control. The controller lives in
// module scope, so one isolate keeps its limits across the requests it serves.
//
// Bindings: API_URL (text: the API's base URL), TRAFFIC_CONTROL_CONFIG (json: a config object, or
// a preset name such as "backmarket"; preset overrides come from the worker's other bindings).
import { TrafficControl, TrafficControlError } from 'traffic-control-wasm';

let tc;
let requests = 0;

export default {
  async fetch(request, env) {
    tc ??= new TrafficControl(env.TRAFFIC_CONTROL_CONFIG, { env });
    const url = new URL(request.url);
    if (url.pathname === '/__traffic-control') return Response.json({ requests, snapshot: tc.snapshot() });
    requests++;
    try {
      const response = await tc.fetch(`${env.API_URL}${url.pathname}${url.search}`, undefined, {
        priority: url.searchParams.get('priority') ?? 'normal',
        maxWait: 10_000,
      });
      return new Response(response.body, { status: response.status, headers: response.headers });
    } catch (e) {
      if (e instanceof TrafficControlError) return Response.json({ code: e.code, message: e.message }, { status: 503 });
      throw e;
    }
  },
};
