-- Argo CD health check for specserve.dev/SpeculativeServing.
-- Install under argocd-cm key resource.customizations.health.specserve.dev_SpeculativeServing (docs/install.md).
-- Driven by status.observedGeneration, status.phase and the conditions the operator writes:
--   Progressing  the operator has not yet acted on this generation, or a rollout is under way
--   Degraded     the spec is refused (Accepted=False) or a Deployment lost availability
--   Suspended    spec.replicas is 0 (and no baseline): nothing is meant to serve
--   Healthy      serving; the message tells when speculation is off, metrics are missing or mode is Observe
local hs = {}

local function condition(conditions, type)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function detail(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local spec = obj.spec or {}
local status = obj.status
local generation = obj.metadata.generation

if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the specserve operator to reconcile"
  return hs
end

local conditions = status.conditions
local accepted = condition(conditions, "Accepted")

if generation ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

if accepted ~= nil and accepted.status == "False" then
  hs.status = "Degraded"
  hs.message = (accepted.reason or "Rejected") .. ": " .. detail(accepted, "the operator refused the spec")
  return hs
end

local ready = condition(conditions, "Ready")
local progressing = condition(conditions, "Progressing")
local replicas = spec.replicas
local baseline = 0
if spec.baseline ~= nil and spec.baseline.replicas ~= nil then
  baseline = spec.baseline.replicas
end

if replicas == 0 and baseline == 0 then
  hs.status = "Suspended"
  hs.message = "Scaled to zero replicas"
  return hs
end

if status.phase == "Invalid" or status.phase == "Degraded" or (ready ~= nil and ready.status == "False" and (progressing == nil or progressing.status ~= "True")) then
  hs.status = "Degraded"
  hs.message = detail(ready, "Deployments are not available")
  return hs
end

if status.phase ~= "Ready" or ready == nil or ready.status ~= "True" then
  hs.status = "Progressing"
  hs.message = detail(progressing, detail(ready, "Rolling out"))
  return hs
end

local notes = {}
if spec.healthPolicy ~= nil and spec.healthPolicy.mode == "Observe" then
  table.insert(notes, "Observe mode: decisions are recorded, not enforced")
end
if status.speculation == "Off" then
  local healthy = condition(conditions, "SpeculationHealthy")
  table.insert(notes, "speculation off: " .. detail(healthy, "disabled by the health policy"))
end
local metrics = condition(conditions, "MetricsAvailable")
if metrics ~= nil and metrics.status == "False" then
  table.insert(notes, "metrics unavailable: " .. detail(metrics, "no data"))
end

hs.status = "Healthy"
if #notes > 0 then
  hs.message = table.concat(notes, "; ")
else
  hs.message = detail(ready, "Serving")
end
return hs
