/* Channel-dependent tier forms in the campaign admin: each tier shows the field groups of its
   channel only (fieldsets with the class tier-for-<channel>), and again when the channel changes
   or a tier is added. Without this script every group shows, each titled with its channels. A
   group holding an error stays visible. */
(function () {
  "use strict";

  function update(tier) {
    if (!tier) return;
    var select = tier.querySelector('select[name$="-channel"]');
    if (!select) return;
    var channel = select.value;
    tier.setAttribute("data-channel", channel);
    tier.querySelectorAll("fieldset.tier-for").forEach(function (group) {
      var show = group.classList.contains("tier-for-" + channel) ||
        group.querySelector(".errorlist") !== null;
      group.style.display = show ? "" : "none";
    });
  }

  function updateAll() {
    document.querySelectorAll(".inline-related").forEach(update);
  }

  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target.matches && target.matches('select[name$="-channel"]')) {
      update(target.closest(".inline-related"));
    }
  });
  document.addEventListener("formset:added", function (event) {
    update(event.target);
  });
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", updateAll);
  } else {
    updateAll();
  }
})();
